"""The batch writer against a real influxd: every outcome of a write."""

from __future__ import annotations

import threading
import time

import pytest

from cli import services
from ingest.worker import ensure_databases
from smartzone.errors import ConfigurationError
from smartzone.settings import InfluxSettings
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from storage.spool import Spool
from storage.writer import REJECTED, Writer
from tests.conftest import stored_readings, wait_for


def _writer(settings, influx, tmp_path, **kw) -> tuple[Writer, DeadLetterStore]:
    store = DeadLetterStore(settings.sql_url)
    kw.setdefault("spool_after", 10.0)
    kw.setdefault("max_buffer_bytes", 1 << 20)
    w = Writer(
        influx,
        settings.influx.raw_database,
        Spool(tmp_path / "spool"),
        store,
        ensure_databases=lambda: ensure_databases(influx, settings),
        **kw,
    )
    return w, store


BASE = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000  # an hour ago: inside the 30-day retention


def _lines(n: int, sensor: str = "s1", start: int = BASE) -> list[str]:
    return [f"weather,sensor={sensor} temperature={10 + i / 10} {start + i * 1_000_000_000}" for i in range(n)]


def test_missing_database_is_created_then_written(settings, influx, tmp_path):
    w, _ = _writer(settings, influx, tmp_path)
    w.write(_lines(10))  # the database does not exist yet: 404, create, retry
    assert len(stored_readings(influx, settings.influx.raw_database)) == 10
    rps = influx.rows(f'SHOW RETENTION POLICIES ON "{settings.influx.raw_database}"', settings.influx.raw_database)
    assert any(r["name"] == "smartzone" and r["default"] and r["duration"] == "720h0m0s" for r in rps)


def test_400_is_bisected_and_only_bad_lines_are_dead_lettered(settings, influx, tmp_path):
    ensure_databases(influx, settings)
    w, store = _writer(settings, influx, tmp_path)
    w.write(_lines(1, sensor="typed"))  # temperature is a float from now on
    good = _lines(50, start=BASE + 100_000_000_000)
    conflict_stored = f'weather,sensor=typed temperature="warm" {BASE + 200_000_000_000}'
    unparseable = f"weather,sensor=x temperature= {BASE + 300_000_000_000}"
    batch = good[:20] + [conflict_stored] + good[20:40] + [unparseable] + good[40:]
    w.write(batch)
    stored = stored_readings(influx, settings.influx.raw_database)
    assert len(stored) == 51  # 50 good + the first typed point
    letters = store.entries(reason=REJECTED)
    assert sorted(d.payload.decode() for d in letters) == sorted([conflict_stored, unparseable])
    assert all(d.stage == "write" and d.detail for d in letters)
    assert any("conflict" in d.detail for d in letters) and any("unable to parse" in d.detail for d in letters)
    assert w.stats.lines_rejected == 2


def test_type_conflict_inside_one_request_loses_nothing(settings, influx, tmp_path):
    ensure_databases(influx, settings)
    w, store = _writer(settings, influx, tmp_path)
    batch = _lines(10, sensor="fresh") + [f'weather,sensor=fresh temperature="hot" {BASE + 950_000_000_000}']
    w.write(batch)  # influxd writes nothing of such a request; the bisection recovers the 10 good lines
    assert len(stored_readings(influx, settings.influx.raw_database)) == 10
    assert len(store.entries(reason=REJECTED)) == 1


def test_bad_credentials_stop_with_a_configuration_error(tmp_path):
    svc = services.influxd(tmp_path / "authd", auth=True).start()
    try:
        # influxd lets the first admin be created without credentials; then auth is enforced
        Influx(InfluxSettings(url=svc.url)).query(
            "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES", write=True
        )
        admin = Influx(InfluxSettings(url=svc.url, username="admin", password="adminpw"))
        admin.query("CREATE DATABASE d", write=True)
        admin.query("CREATE USER reader WITH PASSWORD 'readerpw'", write=True)
        admin.write("d", b"m v=1 1")  # the right credentials write
        wrong = Influx(InfluxSettings(url=svc.url, username="admin", password="wrong"))
        with pytest.raises(ConfigurationError, match="HTTP 401"):
            wrong.write("d", b"m v=1 1")
        unprivileged = Influx(InfluxSettings(url=svc.url, username="reader", password="readerpw"))
        with pytest.raises(ConfigurationError, match="HTTP 403"):
            unprivileged.write("d", b"m v=1 1")
    finally:
        svc.stop()


def test_outage_spools_to_disk_then_replays_in_order(settings, tmp_path):
    svc = services.influxd(tmp_path / "flaky").start()
    s = settings.influx.model_copy(update={"url": svc.url})
    influx = Influx(s)
    settings = settings.model_copy(update={"influx": s})
    ensure_databases(influx, settings)
    w, _ = _writer(settings, influx, tmp_path, spool_after=0.5)
    try:
        svc.stop()
        started = time.monotonic()
        w.write(_lines(5))  # InfluxDB down: after spool_after the batch goes to disk and write returns
        assert 0.4 < time.monotonic() - started < 10
        w.write(_lines(5, start=BASE + 500_000_000_000))  # spool not empty: straight behind it
        assert w.spooled_batches == 2 and len(w.spool) == 2
        assert not w.healthy  # a batch was spooled for the outage: InfluxDB is no longer tried per batch
        svc.start()
        # the background probe sees it answer; the writer then drains the spool first, in order
        assert wait_for(w.drain_spool, 10) and w.healthy
        w.write(_lines(5, start=BASE + 900_000_000_000))
        assert w.spooled_batches == 0 and len(w.spool) == 0
        assert len(stored_readings(influx, settings.influx.raw_database)) == 15
        assert w.stats.batches_spooled == 2 and w.stats.batches_unspooled == 2
    finally:
        svc.stop()
        influx.close()


def test_stopping_spools_at_once_when_influx_is_down(settings, tmp_path):
    influx = Influx(settings.influx.model_copy(update={"url": "http://127.0.0.1:9"}))  # nothing listens
    stopping = threading.Event()
    stopping.set()
    w, _ = _writer(settings, influx, tmp_path, stopping=stopping, spool_after=3600)
    w.write(_lines(3))
    assert len(w.spool) == 1


def test_backlog_over_memory_limit_spools(settings, tmp_path):
    influx = Influx(settings.influx.model_copy(update={"url": "http://127.0.0.1:9"}))
    w, _ = _writer(settings, influx, tmp_path, spool_after=3600, max_buffer_bytes=1000, backlog_bytes=lambda: 5000)
    w.write(_lines(3))
    assert len(w.spool) == 1


def test_worker_replays_a_leftover_spool_when_idle(settings, influx, run_worker):
    # a previous run spooled a batch and died; the new worker replays it without waiting for traffic
    spool = Spool(settings.data_dir / "worker" / settings.mqtt.client_id / "spool")
    spool.append(settings.influx.raw_database, "\n".join(_lines(7, sensor="leftover")).encode())
    worker = run_worker()
    assert wait_for(lambda: len(spool) == 0, 10)
    stored = stored_readings(influx, settings.influx.raw_database)
    assert len(stored) == 7 and {s for s, *_ in stored} == {"leftover"}
    assert worker.writer.stats.batches_unspooled == 1


def test_dead_letter_store_created_by_several_workers_at_once(tmp_path):
    import concurrent.futures

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: DeadLetterStore(url), range(8)))
    assert all(s.counts() == {} for s in stores)
    for s in stores:
        s.close()
