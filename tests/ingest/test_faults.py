"""Faults mid-stream. Each asserts that every reading sent is in InfluxDB exactly once, and nothing else.

The simulated zone streams in a background thread while a part fails: influxd stopped for 30 s,
the worker SIGKILLed, mosquitto restarted, one of two shared-subscription workers SIGKILLed.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from cli import services
from gateways.publisher import Publisher
from gateways.simulator import SimulatedZone
from smartzone.settings import PeerSettings
from tests.conftest import assert_exactly_once, count_points, expected_count, readings_dbs, stored_readings, wait_for

pytestmark = pytest.mark.slow


def _stream(registry, rounds: int, *, seed: int = 11, only_device_time: bool = False):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    emitted = list(SimulatedZone(registry, seed=seed).messages(start, rounds=rounds, step=20))
    if only_device_time:
        emitted = [e for e in emitted if all(t.time_ns is not None for t in e.truth)]
    return emitted


class Streamer(threading.Thread):
    """Publishes the messages at a steady rate, riding out broker restarts (paho reconnects and resends)."""

    def __init__(self, port: int, emitted, rate: float) -> None:
        super().__init__(daemon=True)
        self.pub = Publisher("127.0.0.1", port, client_id="test-streamer")
        self.emitted, self.rate = emitted, rate

    def run(self) -> None:
        self.pub.publish(self.emitted, rate=self.rate)

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive()
        assert self.pub.wait_acked(60), f"broker acked {self.pub.acked} of {self.pub.sent}"
        self.pub.close()


def test_influxd_down_for_30s_mid_stream(settings, registry, run_worker, tmp_path):
    own = services.influxd(tmp_path / "influxd-own").start()
    try:
        s = settings.model_copy(
            update={
                "influx": settings.influx.model_copy(update={"url": own.url}),
                "ingest": settings.ingest.model_copy(update={"spool_after": 5.0}),
            }
        )
        worker = run_worker(s)
        emitted = _stream(registry, rounds=300)  # ~9,900 messages, ~40 s at 250/s
        streamer = Streamer(s.mqtt.port, emitted, rate=250)
        streamer.start()
        time.sleep(4)
        own.stop()
        time.sleep(30)
        assert worker.writer.stats.batches_spooled > 0, "a 30 s outage with spool_after=5 s must spool"
        own.start()
        streamer.finish()
        from storage.influx import Influx

        with Influx(s.influx) as influx:
            db = readings_dbs(s)
            assert wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 60)
            time.sleep(1)
            assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
        assert worker.writer.spooled_batches == 0 and worker.fatal is None
    finally:
        own.stop()


def test_worker_sigkill_mid_stream_and_restart(settings, influx, registry, worker_process):
    emitted = _stream(registry, rounds=400)  # includes BLE and ESPHome readings stamped at receipt
    proc = worker_process(settings)  # returns once the worker is subscribed
    db = readings_dbs(settings)
    streamer = Streamer(settings.mqtt.port, emitted, rate=1500)
    streamer.start()
    assert wait_for(lambda: count_points(influx, db) > 2_000, 30)
    proc.kill()  # SIGKILL: batches in hand are lost to the worker, unacked at the broker
    time.sleep(2)
    proc2 = worker_process(settings)  # same client id: the persistent session redelivers
    streamer.finish()
    wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 90)
    time.sleep(1)
    assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
    assert proc2.stop() == 0


def test_mosquitto_restart_mid_stream(settings, influx, registry, run_worker, mosquitto):
    """A single worker with a plain subscription (``mqtt.share_group = ""``).

    Mosquitto 2.0.11 restores plain subscriptions of persistent sessions from its persistence file,
    but not shared ones: after a restart, what publishers send before a shared-subscription worker has
    resubscribed is acknowledged and dropped (measured here; docs/parts/ingest.md, "Broker restarts"). Only readings
    with device time: a publisher that resends a QoS 1 message after the restart makes a second, new
    message, which a reading stamped at receipt could not be matched to.
    """
    emitted = _stream(registry, rounds=400, only_device_time=True)
    worker = run_worker(settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"share_group": ""})}))
    streamer = Streamer(settings.mqtt.port, emitted, rate=800)
    streamer.start()
    db = readings_dbs(settings)
    assert wait_for(lambda: count_points(influx, db) > 1_000, 30)
    mosquitto.stop()  # clean shutdown: the persistence file is written
    time.sleep(2)
    mosquitto.start()
    streamer.finish()
    assert wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 90)
    time.sleep(1)
    assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
    assert worker.fatal is None


def test_two_shared_workers_one_killed(settings, influx, registry, worker_process):
    emitted = _stream(registry, rounds=400)
    a = worker_process(settings)
    b_settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"client_id": settings.mqtt.client_id + "-b"})}
    )
    b = worker_process(b_settings)
    db = readings_dbs(settings)
    streamer = Streamer(settings.mqtt.port, emitted, rate=1500)
    streamer.start()
    assert wait_for(lambda: count_points(influx, db) > 2_000, 30)
    b.kill()
    before = count_points(influx, db)
    assert wait_for(lambda: count_points(influx, db) > before + 1_000, 30), "the surviving worker keeps ingesting"
    # Mosquitto keeps what was in flight to (or queued for) the dead member in its session: a
    # supervisor restarts it with the same client id and it finishes its share.
    b2 = worker_process(b_settings)
    streamer.finish()
    assert wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 90)
    time.sleep(1)
    assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
    assert a.stop() == 0 and b2.stop() == 0


def test_dead_letters_exactly_once_across_a_kill(settings, registry, worker_process, tmp_path):
    """A worker SIGKILLed after committing a batch's dead letters and before acking the batch.

    InfluxDB is down (``spool_after`` long), so each batch's letters are committed while its readings
    wait for InfluxDB, unacked: a deterministic window between the letters' commit and the ack. The
    restarted worker gets the batches again (DUP, receipt times from the journal) and stores no letter
    twice. Before letters had keys, every bad message of those batches was stored twice.
    """
    from gateways.simulator import Emitted
    from storage.deadletters import DeadLetterStore
    from storage.influx import Influx

    own = services.influxd(tmp_path / "influxd-own").start()
    try:
        s = settings.model_copy(
            update={
                "influx": settings.influx.model_copy(update={"url": own.url}),
                # one batch (everything arrives within the flush interval), held until InfluxDB is back
                "ingest": settings.ingest.model_copy(update={"spool_after": 120.0, "flush_interval": 2.0}),
            }
        )
        good = _stream(registry, rounds=5, only_device_time=True)
        bad = [Emitted(f"gw/gw-dl/json/bad{i}", b"{not json %d" % i, ()) for i in range(40)]
        mixed = [m for pair in zip(good, bad, strict=False) for m in pair] + good[len(bad) :]
        proc = worker_process(s)
        own.stop()
        pub = Publisher("127.0.0.1", s.mqtt.port, client_id="test-dl-publisher")
        pub.publish(mixed)
        assert pub.wait_acked(30)
        pub.close()
        store = DeadLetterStore(s.sql_url)
        try:
            # every letter committed, the readings of the same batches still waiting for InfluxDB
            assert wait_for(lambda: sum(store.counts().values()) >= len(bad), 30)
            proc.kill()
            own.start()
            proc2 = worker_process(s)  # the broker redelivers every unacked message of the session
            with Influx(s.influx) as influx:
                db = readings_dbs(s)
                assert wait_for(lambda: count_points(influx, db) >= expected_count(good), 60)
                assert assert_exactly_once(influx, db, good) == expected_count(good)
            assert proc2.stop() == 0  # everything written and acked
            assert store.counts() == {"malformed": len(bad)}
            assert len({e.topic for e in store.entries(limit=0)}) == len(bad)
        finally:
            store.close()
    finally:
        own.stop()


class FrozenListener:
    """The fault itself, not a fake InfluxDB: a TCP port that accepts connections and never answers."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.held: list = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        import socket

        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_hung_influxdb_spools_at_the_rate_messages_arrive(settings, registry, run_worker, tmp_path):
    """InfluxDB freezes (its port accepts and never answers) while readings stream in.

    With a 3 s request timeout and batches flushed every 50 ms, spooling one batch per timeout would take
    minutes for these messages; the worker marks InfluxDB unhealthy after the first timed-out batch and
    spools the rest as they arrive. Then the real influxd returns on the same port: the spool drains, in
    order, and every reading is stored exactly once.
    """
    from storage.influx import Influx

    port = services.free_port()
    own = services.influxd(tmp_path / "influxd-own", port=port).start()
    frozen = None
    try:
        s = settings.model_copy(
            update={
                "influx": settings.influx.model_copy(update={"url": own.url, "timeout": 3.0}),
                "ingest": settings.ingest.model_copy(
                    update={"spool_after": 3.0, "probe_interval": 0.2, "probe_timeout": 0.5}
                ),
            }
        )
        worker = run_worker(s)
        emitted = _stream(registry, rounds=60)  # ~2,000 messages, some stamped at receipt
        own.stop()
        frozen = FrozenListener(port)
        started = time.monotonic()
        streamer = Streamer(s.mqtt.port, emitted, rate=500)  # ~4 s of traffic
        streamer.start()
        streamer.finish()
        bound = 15.0  # one timeout, the publishing time, slack for a busy machine
        assert wait_for(lambda: worker._acked >= len(emitted), bound - (time.monotonic() - started)), (
            f"{worker._acked} of {len(emitted)} acked in {bound} s; spooled {worker.writer.stats.batches_spooled}"
        )
        assert worker.writer.spooled_batches > 0 and not worker.writer.healthy
        assert frozen.accepted > 0, "the worker did reach the frozen port"
        frozen.close()
        frozen = None
        own.start()  # the real influxd, back on the same port
        with Influx(s.influx) as influx:
            db = readings_dbs(s)
            assert wait_for(lambda: worker.writer.spooled_batches == 0, 30)
            assert wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 30)
            assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
        assert worker.writer.healthy and worker.fatal is None
    finally:
        if frozen is not None:
            frozen.close()
        own.stop()


def test_survivor_takes_over_a_killed_workers_share(settings, influx, registry, worker_process):
    """Two workers that name each other as peers; one is SIGKILLed and NOT restarted while readings stream.

    Without failover, Mosquitto keeps sending the dead member's session half of the new messages, which wait
    there until it returns. With it, the dead worker's will (``mqtt.failover_after`` = 1 s) tells the survivor,
    which takes the dead session out of the share group: every message published after that is written by
    the survivor within a bound, the dead worker still down. What the dead one held is written when it
    returns, through its own receipt journal: exactly once overall.
    """
    emitted = _stream(registry, rounds=120)  # ~6,600 messages, ~11 s at 600/s, some stamped at receipt
    a_id, b_id = settings.mqtt.client_id, settings.mqtt.client_id + "-b"

    def member(cid: str, peer: str):
        update = {"client_id": cid, "peers": [PeerSettings(client_id=peer)], "failover_after": 1}
        return settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update=update)})

    a = worker_process(member(a_id, b_id))
    b_settings = member(b_id, a_id)
    b = worker_process(b_settings)
    db = readings_dbs(settings)
    streamer = Streamer(settings.mqtt.port, emitted, rate=600)
    streamer.start()
    assert wait_for(lambda: count_points(influx, db) > 1_000, 30)
    b.kill()
    killed = time.monotonic()
    released = f"took ingest peer {b_id} out of share group"
    assert wait_for(lambda: released in a.log_path.read_text(), 10, interval=0.05), "no takeover"
    takeover_s = time.monotonic() - killed
    after = streamer.pub.sent  # published from now on: only the survivor is in the group
    assert takeover_s < 5.0, f"takeover took {takeover_s:.1f} s"
    assert after < len(emitted) - 1_000, "the stream ended before the takeover"
    streamer.finish()
    new = {(t.sensor_id, t.quantity, t.time_ns) for e in emitted[after:] for t in e.truth if t.time_ns is not None}

    def stored_new() -> int:
        return len(new & {(s, q, t) for s, q, _, t in stored_readings(influx, db)})

    assert wait_for(lambda: stored_new() == len(new), 15), (
        f"{len(new) - stored_new()} of {len(new)} readings published after the takeover not written "
        "(the dead worker is still down)"
    )
    # the dead worker returns (same client id): it rejoins the group and writes what its session held
    b2 = worker_process(b_settings)
    assert wait_for(lambda: count_points(influx, db) >= expected_count(emitted), 60)
    time.sleep(1)
    assert assert_exactly_once(influx, db, emitted) == expected_count(emitted)
    assert a.stop() == 0 and b2.stop() == 0
