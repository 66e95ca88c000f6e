"""Publishing simulated gateway traffic to a broker (QoS 1), paced or as fast as the broker takes it."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateways.simulator import REPORT_S, Emitted, SimulatedZone, round_of, round_time

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "smartzone-simulator",
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 100,
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.max_inflight = max_inflight
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self._acked = 0
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.sent = 0

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked += 1

    @property
    def acked(self) -> int:
        return self._acked

    def publish(
        self,
        messages: Iterable[Emitted],
        rate: float = 0.0,
        stop: threading.Event | None = None,
        max_pending: int | None = None,
    ) -> int:
        """Publish at ``rate`` messages/s (0: as fast as the broker acks); return how many were sent.

        At most ``max_pending`` (default: the in-flight window) messages wait for their PUBACK: paho
        re-scans its whole outgoing queue on every ack, so letting that queue grow makes publishing
        quadratic. Measured here: a window of 100 publishes about 21,000 msg/s, one of 1,000 about 11,000.
        """
        max_pending = max_pending or self.max_inflight
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        n = 0
        for m in messages:
            if stop is not None and stop.is_set():
                break
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
            while self.sent - self._acked > max_pending:  # bound paho's own queue
                time.sleep(0.001)
            self.client.publish(m.topic, m.payload, qos=1)
            self.sent += 1
            n += 1
        return n

    def wait_acked(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._acked >= self.sent

    def close(self) -> None:
        self.wait_acked(10)
        self.client.disconnect()
        self.client.loop_stop()


def live(
    zone: SimulatedZone,
    stop: threading.Event,
    duration: float = 0.0,
    *,
    after: datetime | None = None,
    clock: Callable[[], float] = time.time,
    wait: Callable[[float], bool] | None = None,
) -> Iterator[Emitted]:
    """The zone as it happens: each round once the clock reaches it, at the rate of the zone's model (every
    sensor once per ``REPORT_S`` simulated seconds, the rounds a backfill writes too), for ``duration``
    seconds (0: until ``stop``).

    The first round is the next one due after ``clock()``, or the round after ``after`` (the last round a
    backfill wrote: rounds since then are published at once, so the two meet without a gap). ``clock``
    (seconds since the epoch) and ``wait`` (sleep up to that many seconds; True to stop) are the time
    source, parameters for tests; by default the wall clock and ``stop.wait``.
    """
    wait = wait or stop.wait
    now = clock()
    i = round_of(after) + 1 if after is not None else math.ceil(now / REPORT_S)
    until = now + duration if duration > 0 else math.inf
    while not stop.is_set() and i * REPORT_S <= until:
        delay = i * REPORT_S - clock()
        if delay > 0 and wait(delay):
            return
        yield from zone.messages(round_time(i), 1, REPORT_S, first_round=i)
        i += 1
