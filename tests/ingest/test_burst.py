"""A burst of 50,000 QoS 1 messages through the broker configuration we ship: 0 lost.

A negative control shows the same kind of burst losing messages under Mosquitto's default limits
(1,000 queued messages per client), so the test could fail if our limits were not in force.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cli import services
from gateways.publisher import Publisher
from gateways.simulator import Emitted, SimulatedZone
from tests.conftest import assert_exactly_once, count_points, expected_count, readings_dbs, wait_for

pytestmark = pytest.mark.slow

N = 50_000


def test_50k_burst_through_the_shipped_broker_config_loses_nothing(settings, influx, registry, run_worker):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    zone = SimulatedZone(registry, seed=3)
    emitted = list(itertools.islice(zone.messages(start, rounds=10_000, step=1, shape="single"), N))
    assert len(emitted) == N and expected_count(emitted) == N
    worker = run_worker()
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(emitted)  # as fast as the broker acks: the worker falls behind, the broker queues
    assert pub.wait_acked(120)
    pub.close()
    db = readings_dbs(settings)
    assert wait_for(lambda: count_points(influx, db) >= N, 180), count_points(influx, db)
    time.sleep(0.5)
    assert assert_exactly_once(influx, db, emitted) == N
    assert worker.pipeline.stats.dead_lettered == 0


class SlowCounter:
    """A QoS 1 subscriber that takes ~1 ms per message, acking each (paho's automatic ack)."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.last = time.monotonic()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="slow", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.ready = threading.Event()
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe("burst/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def _on_message(self, client, userdata, msg) -> None:
        time.sleep(0.001)
        self.count += 1
        self.last = time.monotonic()

    def settle(self, quiet: float = 2.0, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.monotonic() - self.last < quiet:
            time.sleep(0.2)
        self.client.disconnect()
        self.client.loop_stop()
        return self.count


def test_negative_control_default_mosquitto_limits_drop_a_burst(tmp_path):
    d = tmp_path / "default-broker"
    d.mkdir()
    port = services.free_port()
    (d / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = services.Service(
        "mosquitto", "127.0.0.1", port, d, [services.which("mosquitto"), "-c", str(d / "mosquitto.conf")]
    ).start()
    try:
        sub = SlowCounter(port)
        pub = Publisher("127.0.0.1", port)
        sent = pub.publish(Emitted(f"burst/{i % 10}", b"x" * 40, ()) for i in range(20_000))
        assert pub.wait_acked(60)  # every publish was acknowledged by the broker ...
        pub.close()
        received = sub.settle()
        assert received < sent * 0.5, (received, sent)  # ... and most of the burst was dropped anyway
    finally:
        broker.stop()
