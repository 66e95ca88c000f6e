"""Simulator -> real mosquitto -> worker -> real influxd: exact counts and values."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from gateways.publisher import Publisher
from gateways.simulator import SimulatedZone
from smartzone.quantities import CATEGORIES
from storage.deadletters import DeadLetterStore
from tests.conftest import assert_exactly_once, count_points, expected_count, readings_dbs, stored_readings, wait_for


def test_simulated_zone_lands_exactly(settings, influx, registry, run_worker):
    run_worker()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    emitted = list(SimulatedZone(registry, seed=7).messages(start, rounds=20, step=300))
    expected = expected_count(emitted)
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(emitted)
    assert pub.wait_acked(30)
    pub.close()
    db = readings_dbs(settings)
    assert wait_for(lambda: count_points(influx, db) >= expected, 30), (count_points(influx, db), expected)

    assert assert_exactly_once(influx, db, emitted) == expected
    stored = stored_readings(influx, db)
    # every category of the vocabulary is represented by the simulated zone
    measurements = {q.split(".")[0] for _, q, _, _ in stored}
    assert DeadLetterStore(settings.sql_url).counts() == {}, "the simulator's own messages must all decode"
    assert measurements == set(CATEGORIES)  # every category of the vocabulary


def test_status_shows_the_workers_self_metrics(settings, influx, registry, run_worker, monkeypatch, capsys):
    from cli.main import main
    from tests.conftest import settings_env

    for k, v in settings_env(settings).items():
        if k.startswith("SMARTZONE_"):
            monkeypatch.setenv(k, v)
    assert main(["status"]) == 0  # before any worker reported: a clear line, no traceback
    assert "no ingest worker reported" in capsys.readouterr().out
    worker = run_worker()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    emitted = list(SimulatedZone(registry, seed=1).messages(start, rounds=3, step=60))
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(emitted)
    assert pub.wait_acked(30)
    pub.close()
    assert wait_for(lambda: worker._acked >= len(emitted), 20)
    worker.report_metrics()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"worker {settings.mqtt.client_id}" in out
    assert re.search(rf"received +{len(emitted)}  MQTT messages", out)
    assert "dead-letter store: 0 pending" in out
