"""The charter job on a real influxd loaded with a simulated day of the whole zone (through the ingest
pipeline): what reaches the open database, idempotence, restart, late data, charter version change,
audit, and the ``smartzone charter`` commands."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from datacharter.charter import POINT_TAGS, Charter
from datacharter.engine import DAY_NS, levels
from datacharter.job import CharterJob
from datacharter.store import CharterStore
from gateways.backfill import backfill
from gateways.simulator import Zone
from ingest.pipeline import Pipeline
from ingest.worker import ensure_databases, pseudonymiser
from smartzone import cli
from smartzone.names import parse_duration
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx
from tests.conftest import REGISTRY

CHARTER = Charter.load()
NOW = datetime.now(UTC)
DAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=1)  # yesterday, UTC
AFTER_DAY = DAY + timedelta(days=1, minutes=5)  # the job's "now": the whole of DAY is closed


def make_settings(tmp_path, influxd, **charter) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(data_dir=tmp_path / "data", registry=REGISTRY,
                    influx={"url": influxd.url, "raw_database": f"raw_{tag}", "ops_database": f"ops_{tag}",
                            "pseudonymous_database": f"pseudo_{tag}"},
                    charter={"open_database": f"open_{tag}", **charter})


@pytest.fixture(scope="module")
def zone(tmp_path_factory, influxd):
    """One simulated day (every sensor every minute) in raw and pseudonymous databases, the job run once."""
    tmp = tmp_path_factory.mktemp("zone")
    settings = make_settings(tmp, influxd)
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    ensure_databases(influx, settings, CHARTER)
    pipe = Pipeline(registry, settings.ingest.routes, max_payload_bytes=65_536, max_future=timedelta(minutes=5),
                    max_age=timedelta(days=30), pseudonymiser=pseudonymiser(settings, CHARTER))
    loaded = backfill(Zone(registry, 7), pipe, influx, settings, DAY, 1440)
    job = CharterJob(settings, CHARTER, registry, influx)
    reports = job.run_once(now=AFTER_DAY)
    yield {"settings": settings, "registry": registry, "influx": influx, "job": job, "reports": reports,
           "loaded": loaded, "tmp": tmp}
    for db in (settings.influx.raw_database, settings.influx.ops_database, settings.influx.pseudonymous_database,
               settings.charter.open_database):
        influx.drop_database(db)
    job.store.close()
    influx.close()


def open_points(influx: Influx, settings: Settings, dataset: str | None = None) -> dict[str, list[dict]]:
    out = {}
    for name in [dataset] if dataset else CHARTER.datasets:
        out[name] = influx.rows(f'SELECT * FROM "{name}" GROUP BY *', settings.charter.open_database)  # noqa: S608
    return out


def snapshot(influx: Influx, settings: Settings) -> dict[str, list[tuple]]:
    return {name: sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
            for name, rows in open_points(influx, settings).items()}


def test_every_dataset_publishes_and_every_point_keeps_the_charter(zone):
    assert zone["loaded"].dead_letters == 0 or zone["loaded"].dead_letters < zone["loaded"].messages * 0.001
    by_ds = {r.dataset: r for r in zone["reports"] if r.start == int(DAY.timestamp()) * 10**9}
    points = open_points(zone["influx"], zone["settings"])
    # the zone's day publishes something in every dataset it has enough subjects for
    for name in ("air_quality", "mobile_air_quality", "weather", "noise", "traffic", "parking", "pedestrian_flow",
                 "pedestrian_counts", "energy"):
        assert points[name], name
        assert by_ds[name].published == len(points[name]), name
    # ... and keeps back what the charter forbids: the museum (with one house) and the library are fewer than the
    # 10 connections and 3 owners a published total needs, even in their 530 m cells; energy and its profiles are
    # one release, so the profiles take only the 9 meters the totals published: fewer than the k = 10 a profile needs
    assert not points["energy_profiles"] and by_ds["energy_profiles"].suppressed > 0
    assert by_ds["energy"].suppressed > 0 and all(r["n_contributors"] >= 10 for r in points["energy"])
    # the housing block's weather sensor (a BME280 in its meter box) is not a weather station: never published
    weather_cells = {r["cell"] for r in points["weather"]}
    housing = Registry.load(zone["settings"].registry).cell_of("energy-housing-egmont")
    assert weather_cells and housing not in weather_cells
    # the three vehicles share a loop: published per 200 m cell and hour, never a trip's first 300 m
    assert {r["n_contributors"] for r in points["mobile_air_quality"]} == {3}
    for name, rows in points.items():
        ds = CHARTER.datasets[name]
        allowed_levels = set(levels(ds))
        for r in rows:
            fields = {k for k, v in r.items() if v is not None and k not in (*POINT_TAGS, "time", "_measurement",
                                                                             "profile")}
            assert fields <= ds.allowed_fields, (name, fields - ds.allowed_fields)
            assert r["n_contributors"] >= ds.k, (name, r)
            assert (int(r["resolution"]), r["bin"]) in allowed_levels
            assert r["time"] % (int(parse_duration(r["bin"])) * 10**9) == 0  # aligned to its bin
            assert r["charter_version"] == CHARTER.version


def test_counts_of_people_are_noised_and_thresholded(zone):
    ds = CHARTER.datasets["pedestrian_flow"]
    rows = open_points(zone["influx"], zone["settings"], "pedestrian_flow")["pedestrian_flow"]
    assert rows
    # the published total is clipped at 0 per count, the threshold applies before clipping: >= holds anyway
    assert all(r["devices"] + r["randomised_devices"] >= ds.noise_threshold for r in rows)
    assert all(r["n_contributors"] == r["devices"] + r["randomised_devices"] for r in rows)  # no exact count leaks


def test_no_identifier_hash_or_raw_position_reaches_the_open_database(zone):
    influx, settings, registry = zone["influx"], zone["settings"], zone["registry"]
    secrets_: set[str] = set()
    for s in registry.sensors.values():
        secrets_ |= {s.id, *s.keys}
    secrets_ |= set(registry.gateways)
    secrets_ |= {g.eui for g in registry.gateways.values() if g.eui}
    subjects = influx.rows('SHOW TAG VALUES FROM "sighting" WITH KEY = "subject"',
                           settings.influx.pseudonymous_database)
    pseudonyms = {r["value"] for r in subjects}
    assert len(pseudonyms) > 500  # the scan has something to find
    positions = influx.rows('SELECT "latitude", "longitude" FROM "position"', settings.influx.raw_database)
    coords = {round(v, 5) for r in positions for v in (r["latitude"], r["longitude"])}
    assert coords
    db = settings.charter.open_database
    measurements = {r["name"] for r in influx.rows("SHOW MEASUREMENTS", db)}
    assert measurements <= set(CHARTER.datasets)
    tag_keys = {r["tagKey"] for r in influx.rows("SHOW TAG KEYS", db)}
    assert tag_keys <= {*POINT_TAGS, "profile"}
    dump = []
    for rows in open_points(influx, settings).values():
        for r in rows:
            dump += [str(v) for v in r.values()]
            floats = {round(v, 5) for v in r.values() if isinstance(v, float)}
            assert not floats & coords
    text = "\n".join(dump).lower()
    hex16 = set(re.findall(r"\b[0-9a-f]{16}\b", text))
    assert not hex16 & pseudonyms
    for s in secrets_:
        assert s.lower() not in text, s


def test_each_run_leaves_its_figures_in_the_ops_database(zone):
    influx, settings = zone["influx"], zone["settings"]
    rows = influx.rows('SELECT * FROM "charter" WHERE "dataset" = \'noise\'', settings.influx.ops_database)
    first = rows[0]  # the fixture's run
    by_ds = [r for r in zone["reports"] if r.dataset == "noise"]
    assert first["published"] == sum(r.published for r in by_ds) > 0
    assert first["readings_in"] == sum(r.readings_in for r in by_ds)
    assert first["time"] == int(AFTER_DAY.timestamp() * 1e9)
    # the watermark is the end of DAY: the job ran 5 minutes after it
    assert first["lag_s"] == 300.0 and first["charter_version"] == CHARTER.version


def test_running_again_changes_nothing(zone):
    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    before = snapshot(influx, settings)
    again = job.run_once(now=AFTER_DAY)
    assert again and not any(r.written for r in again)
    assert snapshot(influx, settings) == before
    # a fresh job (a restart) with the same noise key computes the same points, noise included
    fresh = CharterJob(settings, CHARTER, zone["registry"], Influx(settings.influx), CharterStore(settings.sql_url))
    assert not any(r.written for r in fresh.run_once(now=AFTER_DAY))
    fresh.close()


def test_a_crash_mid_run_resumes_to_the_same_output(zone, tmp_path, influxd, monkeypatch):
    """A second job over the same raw data, into its own open database and SQL store, crashes while
    writing (after deleting the window's old points); restarted, it ends with the first job's output."""
    influx = zone["influx"]
    base = zone["settings"]
    settings = base.model_copy(update={"data_dir": tmp_path / "other", "charter": base.charter.model_copy(
        update={"open_database": f"open_{uuid.uuid4().hex[:8]}",
                "noise_key_file": base.data_dir / "charter" / "noise.key"})})
    job = CharterJob(settings, CHARTER, zone["registry"], Influx(settings.influx))
    writes = {"n": 0}
    real_write = job.influx.write

    def crashing_write(db, body):
        writes["n"] += 1
        if writes["n"] == 4:
            raise OSError("power cut")
        real_write(db, body)

    monkeypatch.setattr(job.influx, "write", crashing_write)
    with pytest.raises(OSError):
        job.run_once(now=AFTER_DAY)
    assert CharterStore(settings.sql_url).audit()  # some windows were recorded before the crash
    job.close()
    restarted = CharterJob(settings, CHARTER, zone["registry"], Influx(settings.influx))
    restarted.run_once(now=AFTER_DAY)
    restarted.close()
    assert snapshot(influx, settings) == snapshot(influx, base)
    influx.drop_database(settings.charter.open_database)


def test_late_data_reprocesses_only_the_affected_window(zone):
    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    noise = zone["registry"].sensors["noise-volkstraat-1"]
    cell = zone["registry"].resolve(noise.gateway, noise.keys[0]).cell
    bin_start = int((DAY + timedelta(hours=14)).timestamp()) * 10**9
    # a reading that arrives a day late, louder than anything else in its 15 minutes
    late = (f"noise,category=noise,cell={cell},gateway={noise.gateway},sensor={noise.id},technology=wifi "
            f"laeq=93.5,lamax=101.0 {bin_start + 7 * 60 * 10**9 + 1}")
    influx.write(settings.influx.raw_database, late.encode())
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=20))
    redone = [r for r in reports if r.reprocessed]
    assert [(r.dataset, r.start) for r in redone] == [("noise", int(DAY.timestamp()) * 10**9)]
    assert redone[0].written
    rows = influx.rows('SELECT "laeq_max" FROM "noise" WHERE "cell" = $cell AND time = $t',
                       settings.charter.open_database, {"cell": cell, "t": bin_start})
    assert rows[0]["laeq_max"] == 93.5
    # the window is up to date now: another run re-processes nothing
    assert not any(r.reprocessed for r in job.run_once(now=AFTER_DAY + timedelta(hours=20)))
    audit = CharterStore(settings.sql_url).audit("noise")
    assert any(a["reprocessed"] and a["written"] for a in audit)


def test_late_data_of_a_dataset_about_people_is_counted_not_republished(zone):
    """Parking is about spaces (k = 5): a late reading would change a group's figures, and the difference of
    two releases would show the late bay's state. Its days are frozen once published."""
    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    before = snapshot(influx, settings)["parking"]
    bay = zone["registry"].sensors["parking-bay-kloosterstraat-1"]
    cell = zone["registry"].resolve(bay.gateway, bay.keys[0]).cell
    t = int((DAY + timedelta(hours=3, minutes=7, seconds=1)).timestamp()) * 10**9
    influx.write(settings.influx.raw_database,
                 f"parking,category=parking,cell={cell},gateway={bay.gateway},sensor={bay.id},technology=zigbee "
                 f"occupied=true {t}".encode())
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=21))
    assert not [r for r in reports if r.dataset == "parking" and r.reprocessed]
    assert snapshot(influx, settings)["parking"] == before
    audit = [a for a in CharterStore(settings.sql_url).audit("parking") if a["late_rows"]]
    assert [(a["late_rows"], a["written"]) for a in audit] == [(1, False)]
    job.run_once(now=AFTER_DAY + timedelta(hours=21))  # counted once, not at every run
    assert len([a for a in CharterStore(settings.sql_url).audit("parking") if a["late_rows"]]) == 1


def test_a_new_charter_version_leaves_old_points_alone(zone, tmp_path):
    influx, settings = zone["influx"], zone["settings"]
    newer = Charter.parse(CHARTER.text.replace(f'version: "{CHARTER.version}"', 'version: "2026.12.0"'))
    # the next day's first hours arrive; the job now runs under the new version
    registry = zone["registry"]
    pipe = Pipeline(registry, settings.ingest.routes, max_payload_bytes=65_536, max_future=timedelta(minutes=5),
                    max_age=timedelta(days=30), pseudonymiser=pseudonymiser(settings, CHARTER))
    next_day = DAY + timedelta(days=1)
    backfill(Zone(registry, 7), pipe, influx, settings, next_day, 120, first_round=1440)
    job = CharterJob(settings, newer, registry, Influx(settings.influx))
    job.run_once(now=next_day + timedelta(hours=2, minutes=5))
    job.close()
    rows = influx.rows('SELECT "laeq_energy_mean", "charter_version" FROM "noise"', settings.charter.open_database)
    old = [r for r in rows if r["time"] < next_day.timestamp() * 1e9]
    new = [r for r in rows if r["time"] >= next_day.timestamp() * 1e9]
    assert old and {r["charter_version"] for r in old} == {CHARTER.version}
    noise_cells = {s.id for s in registry.sensors.values() if s.category == "noise"}
    assert len(new) == 8 * len(noise_cells)  # 2 hours of 15-minute bins per noise sensor's cell
    assert {r["charter_version"] for r in new} == {"2026.12.0"}


def test_the_commands(zone, monkeypatch, capsys):
    settings = zone["settings"]
    for key, value in {"SMARTZONE_DATA_DIR": str(settings.data_dir), "SMARTZONE_INFLUX__URL": settings.influx.url,
                       "SMARTZONE_INFLUX__RAW_DATABASE": settings.influx.raw_database,
                       "SMARTZONE_INFLUX__PSEUDONYMOUS_DATABASE": settings.influx.pseudonymous_database,
                       "SMARTZONE_CHARTER__OPEN_DATABASE": settings.charter.open_database}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["charter", "check"]) == 0
    out = capsys.readouterr().out
    assert f"valid charter version {CHARTER.version}" in out
    assert "pedestrian_flow: noise spends epsilon 1 per subject per day (budget 1)" in out
    assert cli.main(["charter", "explain", "energy"]) == 0
    assert "at least 10 different grid connections" in capsys.readouterr().out
    assert cli.main(["charter", "explain", "gateway_health"]) == 2
    assert "Anything else is not published" in capsys.readouterr().err
    assert cli.main(["charter", "run", "--once"]) == 0
    out = capsys.readouterr().out
    assert "groups published" in out and "unchanged" in out
    assert cli.main(["charter", "audit", "--limit", "500"]) == 0
    out = capsys.readouterr().out
    day = DAY.strftime("%Y-%m-%d")
    assert re.search(re.escape(CHARTER.version) + r"\s+noise\s+" + day + r"\s+\d+\s+\d+\s+0\s+0\s+written", out)
    bad = zone["tmp"] / "bad.yaml"
    bad.write_text(CHARTER.text.replace("    k: 10                       # the Dutch", "    k: ten  # the Dutch"))
    monkeypatch.setenv("SMARTZONE_CHARTER__PATH", str(bad))
    assert cli.main(["charter", "check"]) == 2
    assert re.search(r"bad\.yaml:\d+: datasets\.energy\.k", capsys.readouterr().err)


def test_window_bounds_are_utc_days(zone):
    for r in zone["reports"]:
        assert r.start % DAY_NS == 0 and r.end - r.start == DAY_NS


def test_dead_letters_holding_pseudonyms_expire_with_the_pseudonymous_data(zone):
    from smartzone.model import DeadLetter
    from storage.deadletters import DeadLetterStore

    settings = zone["settings"]
    store = DeadLetterStore(settings.sql_url)
    old = AFTER_DAY - timedelta(days=3)
    store.add([
        DeadLetter(old, "gw/gw-volkstraat/sightings/ped-volkstraat-1", b'{"subject": "0011223344556677"}',
                   "unknown_field", "x"),
        DeadLetter(old, f"influxdb/{settings.influx.pseudonymous_database}", b"sighting,subject=00 seen=1i 1",
                   "rejected_by_influxdb", "x"),
        DeadLetter(old, "gw/gw-volkstraat/zigbee2mqtt/aq-1", b"{}", "malformed", "x"),  # no pseudonym: kept
        DeadLetter(AFTER_DAY, "gw/gw-volkstraat/sightings/ped-volkstraat-1", b"{}", "malformed", "x"),  # recent
    ])
    zone["job"].run_once(now=AFTER_DAY + timedelta(minutes=1))
    left = {(d.topic, d.reason) for d in store.list(status=None, limit=0)}
    store.close()
    assert ("gw/gw-volkstraat/zigbee2mqtt/aq-1", "malformed") in left
    assert ("gw/gw-volkstraat/sightings/ped-volkstraat-1", "malformed") in left
    assert not {t for t, _ in left if t.startswith("influxdb/pseudo")}
    assert ("gw/gw-volkstraat/sightings/ped-volkstraat-1", "unknown_field") not in left
