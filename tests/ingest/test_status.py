"""``smartzone status`` explains received versus decoded (issue 14, section 5): a real worker takes messages of
every kind from the real broker (several readings in one message, a message with a good and a bad value,
wholly refused ones), reports its metrics to the real influxd, and the real command
says what each number counts and why they differ."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson

from gateways.publisher import Publisher
from gateways.simulator import Emitted
from storage.influx import Influx
from tests.conftest import REPO, settings_env, wait_for

TOPIC = "gw/gw-egmont/json/traffic-egmont-1"


def _json(readings: dict, minutes_ago: int, device: str = "traffic-egmont-1") -> bytes:
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return orjson.dumps({"device": device, "readings": readings, "time": t.isoformat()})


def test_status_explains_received_decoded_and_dead_letters(settings, worker_process):
    messages = [
        *(
            (TOPIC, _json({"traffic.cars": 12, "traffic.cyclists": 3, "traffic.speed_mean": 31.0}, i))
            for i in (1, 2, 3)
        ),
        (TOPIC, _json({"traffic.pedestrians": 4, "flux_capacitor": 1.21}, 4)),  # one good value, one unknown field
        (TOPIC, b'{"device": "traffic-egmont-1", "readings": {'),  # malformed: refused whole
        ("gw/gw-egmont/json/counter-new-1", _json({"traffic.cars": 1}, 5, "counter-new-1")),  # an unknown device
    ]
    worker = worker_process(settings)
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(Emitted(t, p, ()) for t, p in messages)
    assert pub.wait_acked(10)
    pub.close()
    query = 'SELECT last("received") AS "received" FROM "ingest"'
    with Influx(settings.influx) as influx:

        def reported() -> bool:
            try:
                rows = influx.rows(query, settings.influx.ops_database)
            except Exception:
                return False
            return bool(rows) and rows[0]["received"] == len(messages)

        assert wait_for(reported, 20)
    run = subprocess.run(
        [sys.executable, "-m", "cli", "status"],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    worker.stop()
    assert run.returncode == 0, run.stderr
    out = run.stdout

    def figure(label: str) -> tuple[int, str]:
        found = re.search(rf"^  {label} +(\d+)  (.*)$", out, re.M)
        assert found, (label, out)
        return int(found.group(1)), found.group(2)

    assert figure("received") == (6, "MQTT messages the worker took from the broker")
    decoded, why = figure("decoded")
    assert decoded == 4 and "at least one point" in why  # the 3 good ones and the mixed one
    undecoded, why = figure("not decoded")
    assert undecoded == 2 and why.startswith("received - decoded: refused whole (dead letters)")
    lettered, why = figure("dead-lettered")
    assert lettered == 3 and why.endswith("at least 1 also decoded")  # the mixed message: both
    assert re.search(r"problems by reason .*: malformed=1, unknown_device=1, unknown_field=1", out), out
    readings, why = figure("readings")
    assert readings == 10 and why.startswith("2.5 per decoded message")  # 3 x 3 + 1
    lines, why = figure("lines written")
    assert lines == 4 and "a sensor's readings at one time share a point" in why  # one point per message
    assert "dead-letter store: 3 pending" in out


def test_every_figure_status_shows_says_what_it_counts():
    from ingest import metrics

    assert set(metrics.STATUS_FIELDS) <= set(metrics.MEANINGS)
