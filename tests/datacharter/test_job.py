"""The charter job on a real influxd loaded with a simulated day of the whole zone (through the ingest
pipeline): what reaches the open database, idempotence, restart, late data, charter version change,
audit, and the ``smartzone charter`` commands."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cli import main as cli
from cli.backfill import backfill
from datacharter.charter import POINT_TAGS, Charter
from datacharter.engine import DAY_NS, levels
from datacharter.job import WINDOW_COVERAGE, CharterJob
from datacharter.store import CharterStore
from gateways.simulator import SimulatedZone
from ingest.pipeline import Pipeline
from ingest.worker import ensure_databases
from smartzone.names import parse_duration
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx
from tests.conftest import REGISTRY, drop_zone_databases, zone_settings

CHARTER = Charter.load()
NOW = datetime.now(UTC)
DAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=1)  # yesterday, UTC
AFTER_DAY = DAY + timedelta(days=1, minutes=5)  # the job's "now": the whole of DAY is closed


def make_settings(tmp_path, influxd, **charter) -> Settings:
    return zone_settings(tmp_path / "data", influxd.url, charter=charter)


@pytest.fixture(scope="module")
def zone(tmp_path_factory, influxd):
    """One simulated day (every sensor every minute) in raw and pseudonymous databases, the job run once."""
    tmp = tmp_path_factory.mktemp("zone")
    settings = make_settings(tmp, influxd)
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    ensure_databases(influx, settings, CHARTER)
    pipe = Pipeline.from_settings(settings, registry, CHARTER)
    loaded = backfill(SimulatedZone(registry, 7), pipe, influx, settings, DAY, 1440)
    job = CharterJob(settings, CHARTER, registry, influx)
    reports = job.run_once(now=AFTER_DAY)
    yield {
        "settings": settings,
        "registry": registry,
        "influx": influx,
        "job": job,
        "reports": reports,
        "loaded": loaded,
        "tmp": tmp,
    }
    drop_zone_databases(influx, settings)
    job.store.close()
    influx.close()


def open_points(influx: Influx, settings: Settings, dataset: str | None = None) -> dict[str, list[dict]]:
    out = {}
    for name in [dataset] if dataset else CHARTER.datasets:
        out[name] = influx.rows(f'SELECT * FROM "{name}" GROUP BY *', settings.charter.open_database)  # noqa: S608
    return out


def snapshot(influx: Influx, settings: Settings) -> dict[str, list[tuple]]:
    return {
        name: sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
        for name, rows in open_points(influx, settings).items()
    }


def test_every_dataset_publishes_and_every_point_keeps_the_charter(zone):
    assert zone["loaded"].dead_letters == 0 or zone["loaded"].dead_letters < zone["loaded"].messages * 0.001
    by_ds = {r.dataset: r for r in zone["reports"] if r.start == int(DAY.timestamp()) * 10**9}
    points = open_points(zone["influx"], zone["settings"])
    # the zone's day publishes something in every dataset it has enough subjects for
    for name in (
        "air_quality",
        "mobile_air_quality",
        "weather",
        "noise",
        "traffic",
        "parking",
        "pedestrian_flow",
        "pedestrian_counts",
        "energy",
        "energy_profiles",
    ):
        assert points[name], name
        assert by_ds[name].published == len(points[name]), name
    # ... and keeps back what the charter forbids: the museum (with one house), the library and the housing block
    # (one owner) are fewer than the 10 connections and 3 owners a published total needs, even in their 530 m
    # cells; energy and its profiles are one release, so the profiles take only the 10 meters of Volkstraat's
    # published total: one profile of the k = 10 meters
    assert by_ds["energy"].suppressed > 0 and all(r["n_contributors"] >= 10 for r in points["energy"])
    assert {r["n_contributors"] for r in points["energy_profiles"]} == {10}
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
            fields = {
                k for k, v in r.items() if v is not None and k not in (*POINT_TAGS, "time", "_measurement", "profile")
            }
            assert fields <= ds.allowed_fields, (name, fields - ds.allowed_fields)
            assert r["n_contributors"] >= ds.k, (name, r)
            assert (int(r["resolution"]), r["bin"]) in allowed_levels
            # aligned to its bin; a load profile's day holds one point per hour of its curve
            aligned = 3600 if ds.method == "profiles" else int(parse_duration(r["bin"]))
            assert r["time"] % (aligned * 10**9) == 0
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
    subjects = influx.rows(
        'SHOW TAG VALUES FROM "sighting" WITH KEY = "subject"', settings.influx.pseudonymous_database
    )
    pseudonyms = {r["value"] for r in subjects}
    assert len(pseudonyms) > 500  # the scan has something to find
    positions = influx.rows('SELECT "latitude", "longitude" FROM "position"', settings.influx.raw_database)
    coords = {round(v, 5) for r in positions for v in (r["latitude"], r["longitude"])}
    assert coords
    db = settings.charter.open_database
    measurements = {r["name"] for r in influx.rows("SHOW MEASUREMENTS", db)}
    assert measurements <= set(CHARTER.datasets) | {WINDOW_COVERAGE}  # and each window's coverage, per dataset
    tag_keys = {r["tagKey"] for r in influx.rows("SHOW TAG KEYS", db)}
    assert tag_keys <= {*POINT_TAGS, "profile", "dataset"}  # dataset: of the window_coverage points
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
    settings = base.model_copy(
        update={
            "data_dir": tmp_path / "other",
            "charter": base.charter.model_copy(
                update={
                    "open_database": f"open_{uuid.uuid4().hex[:8]}",
                    "noise_key_file": base.data_dir / "charter" / "noise.key",
                }
            ),
        }
    )
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
    late = (
        f"noise,category=noise,cell={cell},gateway={noise.gateway},sensor={noise.id},technology=wifi "
        f"laeq=93.5,lamax=101.0 {bin_start + 7 * 60 * 10**9 + 1}"
    )
    influx.write(settings.influx.raw_database, late.encode())
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=20))
    redone = [r for r in reports if r.reprocessed]
    assert [(r.dataset, r.start) for r in redone] == [("noise", int(DAY.timestamp()) * 10**9)]
    assert redone[0].written
    rows = influx.rows(
        'SELECT "laeq_max" FROM "noise" WHERE "cell" = $cell AND time = $t',
        settings.charter.open_database,
        {"cell": cell, "t": bin_start},
    )
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
    influx.write(
        settings.influx.raw_database,
        f"parking,category=parking,cell={cell},gateway={bay.gateway},sensor={bay.id},technology=zigbee "
        f"occupied=true {t}".encode(),
    )
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=21))
    assert not [r for r in reports if r.dataset == "parking" and r.reprocessed]
    assert snapshot(influx, settings)["parking"] == before
    audit = [a for a in CharterStore(settings.sql_url).audit("parking") if a["late_rows"]]
    assert [(a["late_rows"], a["written"]) for a in audit] == [(1, False)]
    job.run_once(now=AFTER_DAY + timedelta(hours=21))  # counted once, not at every run
    assert len([a for a in CharterStore(settings.sql_url).audit("parking") if a["late_rows"]]) == 1


def _rewrite(influx: Influx, db: str, measurement: str, sensor: str, at: datetime, field: str, change) -> tuple:
    """Send again the sensor's first reading from ``at`` on, with the same series and timestamp and ``field``
    changed by ``change``: InfluxDB overwrites the value, the row count stays. (old value, new value, time)."""
    rows = influx.rows(
        f'SELECT * FROM "{measurement}" WHERE "sensor" = $s AND time >= $t GROUP BY * LIMIT 1',  # noqa: S608
        db,
        {"s": sensor, "t": int(at.timestamp()) * 10**9},
    )
    row = rows[0]
    old = row[field]
    keys = {k: v for k, v in row.items() if k not in ("time", "_measurement") and isinstance(v, str) and v != ""}
    tags = ",".join(f"{k}={v}" for k, v in sorted(keys.items()))
    new = change(old)
    value = f"{int(new)}i" if QUANTITIES[f"{measurement}.{field}"].kind == "int" else repr(float(new))
    influx.write(db, f"{measurement},{tags} {field}={value} {row['time']}".encode())
    return old, new, row["time"]


def _day_rows(influx: Influx, db: str, measurement: str) -> int:
    q = f'SELECT count(*) FROM "{measurement}" WHERE time >= $a AND time < $b'  # noqa: S608
    row = influx.rows(q, db, {"a": int(DAY.timestamp()) * 10**9, "b": int(DAY.timestamp()) * 10**9 + DAY_NS - 1})[0]
    return max(v for k, v in row.items() if k.startswith("count_"))


def test_a_rewritten_reading_reprocesses_its_day(zone):
    """A corrected reading sent with the same timestamp overwrites the raw one: the day's row count does not
    change (a count alone would miss it), its content does; the day is processed again and the open database
    serves the new value."""
    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    raw, start = settings.influx.raw_database, int(DAY.timestamp()) * 10**9
    store = CharterStore(settings.sql_url)
    rows_before = _day_rows(influx, raw, "weather")
    assert store.window("weather", start).rows_seen == rows_before
    old, new, t = _rewrite(
        influx,
        raw,
        "weather",
        "wx-volkstraat-1",
        DAY + timedelta(hours=13),
        "temperature",
        lambda v: round(v + 15.25, 2),
    )
    # the negative control: the raw row count is what the job saw, so a count-only rule finds nothing late
    assert _day_rows(influx, raw, "weather") == rows_before == store.window("weather", start).rows_seen
    assert job._counts(CHARTER.datasets["weather"], start, start + DAY_NS)[start].rows == rows_before
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=22))
    redone = [r for r in reports if r.reprocessed]
    assert [(r.dataset, r.start) for r in redone] == [("weather", start)]
    assert redone[0].written
    cell = zone["registry"].cell_of("wx-volkstraat-1")
    bin_start = t // (15 * 60 * 10**9) * (15 * 60 * 10**9)
    served = influx.rows(
        'SELECT "temperature_max" FROM "weather" WHERE "cell" = $cell AND time = $t',
        settings.charter.open_database,
        {"cell": cell, "t": bin_start},
    )
    assert served[0]["temperature_max"] == new != old
    # recorded: the next run re-processes nothing, and the audit says why it re-processed
    assert not any(r.reprocessed for r in job.run_once(now=AFTER_DAY + timedelta(hours=22)))
    audit = [a for a in store.audit("weather", limit=500) if a["content_changed"]]
    assert [(a["window_start"], a["reprocessed"], a["written"], a["late_rows"]) for a in audit] == [
        (start, True, True, 0)
    ]
    store.close()


def test_a_rewritten_reading_of_a_frozen_day_is_counted_not_republished(zone, monkeypatch, capsys):
    """Energy is frozen: a meter's rewritten power changes the day's raw content, not its count; nothing is
    re-published (its profiles, from the same meters, neither), the audit records the change once."""
    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    raw, start = settings.influx.raw_database, int(DAY.timestamp()) * 10**9
    before = snapshot(influx, settings)
    rows_before = _day_rows(influx, raw, "energy")
    _rewrite(
        influx,
        raw,
        "energy",
        "energy-school-volkstraat",
        DAY + timedelta(hours=9),
        "power",
        lambda v: round(v * 3 + 1000.5, 1),
    )
    assert _day_rows(influx, raw, "energy") == rows_before  # the count alone does not change
    reports = job.run_once(now=AFTER_DAY + timedelta(hours=23))
    assert not [r for r in reports if r.reprocessed]
    assert snapshot(influx, settings) == before
    store = CharterStore(settings.sql_url)

    def changed():
        return sorted(
            (a["dataset"], a["window_start"], a["late_rows"], a["written"])
            for a in store.audit(limit=500)
            if a["content_changed"] and a["dataset"].startswith("energy")
        )

    assert changed() == [("energy", start, 0, False), ("energy_profiles", start, 0, False)]
    job.run_once(now=AFTER_DAY + timedelta(hours=23))  # counted once, not at every run
    assert len(changed()) == 2
    # the other frozen days' content is as processed: the sightings (string tags, an integer field), the bays
    # (a boolean field: the late row of the test above), ... sum up the same run after run
    assert {a["dataset"] for a in store.audit(limit=1000) if a["content_changed"] and not a["reprocessed"]} == {
        "parking",
        "energy",
        "energy_profiles",
    }
    store.close()
    # ``smartzone charter audit`` shows it
    monkeypatch.setenv("SMARTZONE_DATA_DIR", str(settings.data_dir))
    assert cli.main(["charter", "audit", "energy"]) == 0
    assert re.search(
        r"energy\s+" + DAY.strftime("%Y-%m-%d") + r".*readings rewritten, not published \(day frozen\)",
        capsys.readouterr().out,
    )


def test_a_store_made_before_the_new_columns_gets_them(tmp_path):
    """A charter_windows/charter_audit of an earlier release (SQLAlchemy's create_all does not change existing
    tables): the columns are added at start-up, old rows read as unknown content and unchanged."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE charter_windows (dataset VARCHAR(64) NOT NULL, window_start BIGINT NOT NULL, "
                "rows_seen BIGINT NOT NULL, points INTEGER NOT NULL, digest VARCHAR(64) NOT NULL, "
                "charter_version VARCHAR(32) NOT NULL, processed_at DATETIME NOT NULL, "
                "PRIMARY KEY (dataset, window_start))"
            )
        )
        c.execute(
            sa.text(
                "CREATE TABLE charter_audit (id INTEGER NOT NULL PRIMARY KEY, at DATETIME NOT NULL, "
                "charter_version VARCHAR(32) NOT NULL, dataset VARCHAR(64) NOT NULL, "
                "window_start BIGINT NOT NULL, window_end BIGINT NOT NULL, readings_in BIGINT NOT NULL, "
                "groups_published INTEGER NOT NULL, groups_suppressed INTEGER NOT NULL, "
                "rows_deferred BIGINT NOT NULL, reprocessed BOOLEAN NOT NULL, written BOOLEAN NOT NULL, "
                "late_rows BIGINT NOT NULL)"
            )
        )
        c.execute(sa.text("INSERT INTO charter_windows VALUES ('noise', 0, 10, 2, 'abc', '1', '2026-11-25 00:00:00')"))
        c.execute(
            sa.text(
                "INSERT INTO charter_audit VALUES (1, '2026-11-25 00:00:00', '1', 'noise', 0, 1, 10, 2, 0, 0, 0, 1, 3)"
            )
        )
    engine.dispose()
    store = CharterStore(url)
    columns = {
        t: {c["name"] for c in sa.inspect(store.engine).get_columns(t)} for t in ("charter_windows", "charter_audit")
    }
    assert "fingerprint" in columns["charter_windows"] and "content_changed" in columns["charter_audit"]
    assert store.window("noise", 0).fingerprint is None and store.window("noise", 0).rows_seen == 10
    [old] = store.audit()
    assert old["late_rows"] == 3 and old["content_changed"] is False
    store.set_fingerprint("noise", 0, '{"count":{"laeq":10},"sum":{"laeq":500.5}}')
    store.record(
        "noise",
        DAY_NS,
        2 * DAY_NS,
        version="2",
        readings_in=5,
        rows_seen=5,
        published=1,
        suppressed=0,
        deferred=0,
        digest="d",
        reprocessed=True,
        written=True,
        watermark=None,
        fingerprint="{}",
        changed=True,
    )
    assert store.window("noise", 0).fingerprint == '{"count":{"laeq":10},"sum":{"laeq":500.5}}'
    assert store.windows_since("noise", DAY_NS)[DAY_NS].fingerprint == "{}"
    assert [a["content_changed"] for a in store.audit()] == [True, False]
    store.close()
    CharterStore(url).close()  # started again: nothing left to add


def test_a_day_processed_before_fingerprints_takes_its_content_as_baseline(zone):
    """Windows recorded by an earlier release have no fingerprint: the first run takes today's content as the
    baseline (re-processing nothing), later rewrites are found against it."""
    import sqlalchemy as sa

    influx, settings, job = zone["influx"], zone["settings"], zone["job"]
    start = int(DAY.timestamp()) * 10**9
    store = CharterStore(settings.sql_url)
    with store.engine.begin() as c:
        c.execute(sa.text("UPDATE charter_windows SET fingerprint = NULL WHERE dataset = 'noise'"))
    assert store.window("noise", start).fingerprint is None
    assert not any(r.reprocessed for r in job.run_once(now=AFTER_DAY + timedelta(hours=23)))
    assert store.window("noise", start).fingerprint is not None
    _rewrite(
        influx,
        settings.influx.raw_database,
        "noise",
        "noise-volkstraat-1",
        DAY + timedelta(hours=16),
        "laeq",
        lambda v: round(v + 7.5, 1),
    )
    redone = [(r.dataset, r.start) for r in job.run_once(now=AFTER_DAY + timedelta(hours=23)) if r.reprocessed]
    assert redone == [("noise", start)]
    store.close()


def test_a_new_charter_version_leaves_old_points_alone(zone, tmp_path):
    influx, settings = zone["influx"], zone["settings"]
    newer = Charter.parse(CHARTER.text.replace(f'version: "{CHARTER.version}"', 'version: "2026.12.0"'))
    # the next day's first hours arrive; the job now runs under the new version
    registry = zone["registry"]
    pipe = Pipeline.from_settings(settings, registry, CHARTER)
    next_day = DAY + timedelta(days=1)
    backfill(SimulatedZone(registry, 7), pipe, influx, settings, next_day, 120, first_round=1440)
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
    for key, value in {
        "SMARTZONE_DATA_DIR": str(settings.data_dir),
        "SMARTZONE_INFLUX__URL": settings.influx.url,
        "SMARTZONE_INFLUX__RAW_DATABASE": settings.influx.raw_database,
        "SMARTZONE_INFLUX__PSEUDONYMOUS_DATABASE": settings.influx.pseudonymous_database,
        "SMARTZONE_CHARTER__OPEN_DATABASE": settings.charter.open_database,
    }.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["charter", "check"]) == 0
    out = capsys.readouterr().out
    assert f"valid charter version {CHARTER.version}" in out
    assert "pedestrian_flow: noise spends epsilon 1 per subject per day (budget 1)" in out
    # which registered sensors each dataset reads, and the indoor classroom sensor that feeds none
    assert "energy: reads 14 registered sensors (energy; public_space, private_premises, indoor)" in out
    assert "weather: reads 5 registered sensors (weather; public_space)" in out
    assert "aq-lora-school-volkstraat (air_quality, indoor) feeds no dataset" in out
    assert cli.main(["charter", "explain", "energy"]) == 0
    assert "at least 10 different grid connections" in capsys.readouterr().out
    assert cli.main(["charter", "explain", "gateway_health"]) == 2
    assert "Anything else is not published" in capsys.readouterr().err
    # the clock is a parameter: the pass runs at AFTER_DAY like the others (run at the wall clock shortly after
    # UTC midnight, an earlier test's writes of today's first hours would make this pass write them)
    assert cli.main(["charter", "run", "--once", "--now", AFTER_DAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"charter {CHARTER.version} run: " in out
    # DAY was published by the fixture's passes: unchanged if listed at all; today's windows (today's rows of
    # the fixture and of other tests) are still open at AFTER_DAY: their rows are deferred, nothing published
    passes = [ln.split() for ln in out.splitlines() if re.match(r"\w+\s+\d{4}-\d\d-\d\d readings=", ln)]
    day, today = DAY.strftime("%Y-%m-%d"), AFTER_DAY.strftime("%Y-%m-%d")
    assert passes and {p[1] for p in passes} <= {day, today}
    for p in passes:
        if p[1] == day:
            assert p[-1] == "unchanged", p
        else:
            assert p[3] == "published=0" and p[2].split("=")[1] == p[5].split("=")[1], p  # all deferred
    assert cli.main(["charter", "audit", "--limit", "500"]) == 0
    out = capsys.readouterr().out
    day = DAY.strftime("%Y-%m-%d")
    assert re.search(
        re.escape(CHARTER.version) + r"\s+noise\s+" + day + r"\s+\d+\s+\d+\s+0\s+0\s+1\.00 \(\d+/\d+\)\s+written", out
    )
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
    store.add(
        [
            DeadLetter(
                old,
                "gw/gw-volkstraat/sightings/ped-volkstraat-1",
                b'{"subject": "0011223344556677"}',
                "unknown_field",
                "x",
            ),
            DeadLetter(
                old,
                f"influxdb/{settings.influx.pseudonymous_database}",
                b"sighting,subject=00 seen=1i 1",
                "rejected_by_influxdb",
                "x",
            ),
            DeadLetter(old, "gw/gw-volkstraat/zigbee2mqtt/aq-1", b"{}", "malformed", "x"),  # no pseudonym: kept
            DeadLetter(AFTER_DAY, "gw/gw-volkstraat/sightings/ped-volkstraat-1", b"{}", "malformed", "x"),  # recent
        ]
    )
    zone["job"].run_once(now=AFTER_DAY + timedelta(minutes=1))
    left = {(d.topic, d.reason) for d in store.entries(status=None, limit=0)}
    store.close()
    assert ("gw/gw-volkstraat/zigbee2mqtt/aq-1", "malformed") in left
    assert ("gw/gw-volkstraat/sightings/ped-volkstraat-1", "malformed") in left
    assert not {t for t, _ in left if t.startswith("influxdb/pseudo")}
    assert ("gw/gw-volkstraat/sightings/ped-volkstraat-1", "unknown_field") not in left
