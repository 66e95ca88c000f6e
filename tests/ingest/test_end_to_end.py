"""Simulator -> real mosquitto -> worker -> real influxd: exact counts and values."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from gateways.publisher import Publisher
from gateways.simulator import Zone
from storage.deadletters import DeadLetterStore
from tests.conftest import count_points, stored_readings, wait_for


def _truth(emitted):
    timed, untimed = {}, Counter()
    for e in emitted:
        for t in e.truth:
            if t.time_ns is None:
                untimed[(t.sensor_id, t.quantity, t.value)] += 1
            else:
                timed[(t.sensor_id, t.quantity, t.time_ns)] = t.value
    return timed, untimed


def test_simulated_zone_lands_exactly(settings, influx, registry, run_worker):
    run_worker()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    emitted = list(Zone(registry, seed=7).messages(start, rounds=20, step=300))
    timed, untimed = _truth(emitted)
    expected = len(timed) + sum(untimed.values())
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(emitted)
    assert pub.wait_acked(30)
    pub.close()
    db = settings.influx.raw_database
    assert wait_for(lambda: count_points(influx, db) >= expected, 30), (count_points(influx, db), expected)

    stored = stored_readings(influx, db)
    assert len(stored) == expected
    got_timed = {(s, q, t): v for s, q, v, t in stored if (s, q, t) in timed}
    assert got_timed == timed
    got_untimed = Counter((s, q, v) for s, q, v, t in stored if (s, q, t) not in timed)
    assert got_untimed == untimed
    # every category of the vocabulary is represented by the simulated zone
    measurements = {q.split(".")[0] for _, q, _, _ in stored}
    assert DeadLetterStore(settings.sql_url).counts() == {}, "the simulator's own messages must all decode"
    assert measurements == {"air_quality", "noise", "traffic", "parking", "pedestrian_flow", "energy", "weather",
                            "gateway_health"}
