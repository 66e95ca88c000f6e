"""The ingest worker: MQTT v5 shared subscription -> pipeline -> batched durable write -> ack.

The loop (Telegraf's mqtt_consumer, in paho terms):

1. paho's network thread calls ``_on_message``; the message gets its receipt time (or, when it is a
   redelivery, the time recorded in the receipt journal), goes through the pipeline, its Points are
   rendered (``storage.lineprotocol``), and its lines per store, dead letter and ``(mid, qos)`` join the
   open batch;
2. the batch is handed to the writing thread when it holds ``batch_size`` messages or the broker's
   receive window, or when it is ``flush_interval`` seconds old (a ticker thread checks);
3. the writing thread journals receipt times, writes dead letters and lines durably (InfluxDB or
   the spool), and only then acks each message, in arrival order.

Points go to four stores, each a database (``storage.databases``): raw readings, ops (operational events,
self-metrics: ``ingest.metrics``), pseudonymous (sightings of passers-by, pseudonymised with the daily
peppers kept in ``<data_dir>/peppers``, ``ingest.pepper``) and experiments (protocol experiments' metrics,
state changes and reported phases: ``ingest.decoders.experiments``).

Messages of a connection that has since dropped are written but not acked: the broker redelivers
them on the persistent session and the rewrite is idempotent. A ``ConfigurationError`` (e.g.
InfluxDB refusing our credentials) stops the worker; bad input never does.
"""

from __future__ import annotations

import logging
import queue
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from datacharter.charter import Charter
from ingest import metrics
from ingest.failover import Failover
from ingest.journal import ReceiptJournal, message_key
from ingest.pipeline import Pipeline, subscriptions
from smartzone.errors import ConfigurationError, InfluxError
from smartzone.model import EPOCH, DeadLetter, Message, Point, Store
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage import databases
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from storage.lineprotocol import TagSet, join, render_by_store
from storage.spool import Spool
from storage.writer import Writer

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
_PUBACK_HEADER = 0x4002 << 16  # the broker keeps our session (and queues for it) this long


@dataclass
class Batch:
    generation: int
    started: float = field(default_factory=time.monotonic)
    lines: dict[Store, list[str]] = field(default_factory=dict)  # rendered Points, by store
    letters: list[DeadLetter] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    journal: list[int] = field(default_factory=list)  # key, receipt ns, key, receipt ns, ...
    nbytes: int = 0


AGENT_RECEIVED = "smartzone-received"  # the gateway agent's MQTT v5 user property (gateways/agent/relay.py)


def _agent_stamp(user_properties: list[tuple[str, str]], now_ns: int, window: tuple[int, int]) -> int | None:
    """The receipt time (ns) the gateway agent stamped on a message, when it has one that is a plausible time
    (no older than the raw retention, no further ahead than ``ingest.max_future``: a gateway whose clock is
    not set yet gets ours instead)."""
    for name, value in user_properties:
        if name == AGENT_RECEIVED:
            try:
                ns = int(value) * 1000
            except ValueError:
                return None
            max_age, max_future = window
            return ns if now_ns - max_age <= ns <= now_ns + max_future else None
    return None


# the stores ingestion writes (the open one is the charter job's)
STORES = (Store.RAW, Store.OPS, Store.PSEUDONYMOUS, Store.EXPERIMENTS)


def ensure_databases(influx: Influx, settings: Settings, charter: Charter | None = None) -> None:
    """The ingest stores' databases, with the retention policies the data charter sets for raw and
    pseudonymised data (``storage.databases``)."""
    charter = charter or Charter.load(settings.charter.path)
    databases.ensure_databases(influx, settings, charter.doc.retention, STORES)


class Worker:
    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry or Registry.load(settings.registry)
        ing = settings.ingest
        self.charter = Charter.load(settings.charter.path)
        self.pipeline = Pipeline.from_settings(settings, self.registry, self.charter, cap_unrouted=True)
        # how far a gateway agent's receipt time may lie from ours: the pipeline's own time limits
        self._stamp_window = (
            int(self.pipeline.max_age.total_seconds() * 1e9),
            int(self.pipeline.max_future.total_seconds() * 1e9),
        )
        # the routes' filters and the watched ones (``ingest.watch``), none covering another; route filters a
        # watched one covers were subscribed by earlier versions: dropped from a resumed session
        self._filters = subscriptions(ing.routes, ing.watch)
        self._covered = [r.filter for r in ing.routes if r.filter not in self._filters]
        self.databases = databases.databases(settings)
        data = settings.data_dir / "worker" / settings.mqtt.client_id
        self.influx = Influx(settings.influx)
        self.deadletters = DeadLetterStore(settings.sql_url)
        self.journal = ReceiptJournal(data / "receipts.journal", rotate_at=max(1_000, settings.mqtt.receive_maximum))
        self.stopping = threading.Event()
        self.writer = Writer(
            self.influx,
            self.databases,
            Spool(data / "spool"),
            self.deadletters,
            spool_after=ing.spool_after,
            max_buffer_bytes=ing.max_buffer_bytes,
            ensure_databases=lambda: ensure_databases(self.influx, settings, self.charter),
            backlog_bytes=lambda: self._backlog_bytes,
            stopping=self.stopping,
            probe_interval=ing.probe_interval,
            probe_timeout=ing.probe_timeout,
        )
        self._flush_at = min(ing.batch_size, settings.mqtt.receive_maximum)
        self._lock = threading.Lock()  # the open batch
        self._counts_lock = threading.Lock()  # backlog and unacked counters, shared by two threads
        self._generation = 0
        self._batch = Batch(0)
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=4)
        self._backlog_bytes = 0
        self._unacked = 0
        self._acked = 0
        self._series_reported: dict[TagSet, int] = {}  # the pipeline's per-sensor counts at the last report
        self._reasons_reported: dict[str, int] = {}  # and its dead letters per reason
        self._connected = threading.Event()
        self._fatal: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._routes_mid: int | None = None  # the SUBSCRIBE of our routes (the peers' status has its own)
        self.failover = Failover(settings, self._connected, self.stopping, SESSION_EXPIRY_S)
        self.client = self._make_client()

    # -- MQTT ---------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        m = self.settings.mqtt
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        if m.username:
            client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
        if m.tls:
            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.failover.attach(client)  # last will, peers' status
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            if reason_code.value in (0x86, 0x87, 0x8C):  # bad credentials / not authorised
                self._fail(ConfigurationError(f"MQTT broker refused us: {reason_code}"))
            return
        opts = mqtt.SubscribeOptions(qos=1)
        group = self.settings.mqtt.share_group
        # With a group, workers split the load ($share/<group>/<filter>); without one, a plain
        # subscription, which Mosquitto 2.0 restores from persistence after a restart (it does not
        # restore shared ones: see README, "Broker restarts").
        topics = [(f"$share/{group}/{f}" if group else f, opts) for f in self._filters]
        _, self._routes_mid = client.subscribe(topics)
        if flags.session_present and self._covered:  # after subscribing: a message in between comes twice, not never
            client.unsubscribe([f"$share/{group}/{f}" if group else f for f in self._covered])
        self.failover.on_connect(client)
        log.info("MQTT connected session_present=%s subscriptions=%d", flags.session_present, len(topics))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:  # e.g. the broker's ACL does not let this user read the topics
            self._fail(ConfigurationError(f"MQTT broker refused our subscriptions: {', '.join(refused)}"))
            return
        if mid != self._routes_mid:
            return  # the peers' status (ingest.failover)
        log.info("MQTT subscribed topics=%d", len(reason_codes))
        self._connected.set()  # ready: the broker now routes our topics to us

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        with self._lock:
            self._generation += 1
            self._flush_locked()  # written, not acked: the broker redelivers, the rewrite is idempotent
            self._batch = Batch(self._generation)
        if not self.stopping.is_set():
            log.warning("MQTT connection lost: %s; reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        now_ns = time.time_ns()
        topic_b = m._topic  # bytes; m.topic decodes on every access
        payload = bytes(m.payload)  # paho decodes it as bytes (struct.unpack): the same object, no copy
        key = message_key(topic_b, payload, m.mid)
        props = m.properties
        stamped = None
        if props is not None and hasattr(props, "UserProperty"):
            stamped = _agent_stamp(props.UserProperty, now_ns, self._stamp_window)
        if stamped is not None:  # the gateway agent's receipt time: the same on every copy it sends
            now_ns = stamped
        elif m.dup:
            recorded = self.journal.get(key)
            if recorded is not None:
                now_ns = recorded
        now_ns = now_ns // 1000 * 1000  # microseconds: what the Reading's datetime can hold
        self.journal.remember(key, now_ns)
        try:
            topic = topic_b.decode()
        except UnicodeDecodeError:
            topic = topic_b.decode(errors="replace")
        received = EPOCH + timedelta(microseconds=now_ns // 1000)
        try:
            msg = self.pipeline.message(topic, payload, received)
            lines, letter = self.pipeline.render(msg, self.pipeline.process(msg))
        except Exception as exc:  # never crash on input: the message is kept as a dead letter
            log.exception("pipeline failure topic=%s", topic)
            lines = None
            kept = self.pipeline.kept_payload(Message(topic, payload, received))  # scrubbed where it must be
            letter = DeadLetter(received, topic, kept, "internal_error", f"{type(exc).__name__}: {exc}")
        with self._lock:
            b = self._batch
            if lines:
                batch = b.lines
                for store, new in lines.items():
                    held = batch.get(store)
                    if held is None:
                        batch[store] = new
                    else:
                        held += new
                    for ln in new:
                        b.nbytes += len(ln) + 1
            if letter is not None:
                b.letters.append(letter)
                b.nbytes += len(payload)
            b.acks.append((m.mid, m.qos))
            b.journal += (key, now_ns)
            with self._counts_lock:
                self._unacked += 1
            if len(b.acks) >= self._flush_at:
                self._flush_locked()

    def _flush_locked(self) -> None:
        b = self._batch
        if not b.acks and not b.letters:
            return
        self._batch = Batch(self._generation)
        with self._counts_lock:
            self._backlog_bytes += b.nbytes
        while self._fatal is None:  # a full queue blocks the network thread: backpressure to the broker
            try:
                self._queue.put(b, timeout=0.5)
                return
            except queue.Full:
                continue

    # -- threads ------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            try:
                b = self._queue.get(timeout=1.0)
            except queue.Empty:
                # idle: replay what an outage (or a previous run) left in the spool
                if self.writer.spooled_batches:
                    try:
                        self.writer.drain_spool()
                    except ConfigurationError as exc:
                        self._fail(exc)
                        return
                continue
            if b is None:
                return
            try:
                self.journal.persist(b.journal)
                self.writer.write_stores(b.lines, b.letters)
            except ConfigurationError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # e.g. the dead-letter database failing: keep the batch unacked
                log.exception("write failed; the batch stays unacknowledged and will be redelivered")
                self._fail(exc)
                return
            if b.generation == self._generation:
                self._ack(b.acks)
                self._acked += len(b.acks)
            with self._counts_lock:  # never held while blocking: the network thread may wait on the queue
                self._backlog_bytes -= b.nbytes
                self._unacked -= len(b.acks)

    def _ack(self, acks: list[tuple[int, int]]) -> None:
        """PUBACK every message of a written batch, in arrival order, in one socket write.

        ``client.ack()`` queues one 4-byte packet and wakes the network thread once per message, which
        took 43% of the writing thread in the ingest benchmark. The PUBACKs are concatenated instead
        (MQTT allows several control packets in one write) and handed to paho's packet queue once.
        This uses paho's private ``_packet_queue``: paho-mqtt is pinned below 3, and the public
        ``ack()`` is the fallback if it ever goes away.
        """
        qos1 = [mid for mid, qos in acks if qos == 1]
        queue_packet = getattr(self.client, "_packet_queue", None)
        if qos1 and queue_packet is not None and len(qos1) == len(acks):
            # PUBACK: fixed header 0x40, remaining length 2, packet id (MQTT v5 allows omitting the
            # reason code when it is 0x00 Success and there are no properties)
            blob = struct.pack(f"!{len(qos1)}I", *[_PUBACK_HEADER | mid for mid in qos1])
            queue_packet(PUBACK, blob, 0, 0)
            return
        for mid, qos in acks:
            self.client.ack(mid, qos)

    def _tick_loop(self) -> None:
        ing = self.settings.ingest
        next_metrics = time.monotonic() + ing.metrics_interval
        while not self.stopping.wait(min(ing.flush_interval / 4, 0.05)):
            with self._lock:
                if self._batch.acks and time.monotonic() - self._batch.started >= ing.flush_interval:
                    self._flush_locked()
            if time.monotonic() >= next_metrics:
                next_metrics += ing.metrics_interval
                self.report_metrics()

    def report_metrics(self) -> None:
        """Write the pipeline's self-metrics (cumulative counters) to the ops database.

        Skipped while the writer holds InfluxDB unhealthy: a hung InfluxDB would hold the ticker (and the
        batches' time-based flushes) for a request timeout; the next report carries the deltas."""
        if not self.writer.healthy:
            return
        p, w = self.pipeline.stats, self.writer.stats
        latencies, w.latencies = w.latencies, []
        worker = {metrics.WORKER: self.settings.mqtt.client_id}
        ns = time.time_ns()
        counters = {
            "received": p.received,
            "decoded": p.decoded,
            "readings": p.readings,
            "dead_lettered": p.dead_lettered,
            "ignored": p.ignored,
            "no_route_not_kept": p.no_route_not_kept,
            "fields_dropped": p.fields_dropped,
            "lines_written": w.lines_written,
            "lines_rejected": w.lines_rejected,
            "batches": w.batches,
            "batches_spooled": w.batches_spooled,
            "batches_unspooled": w.batches_unspooled,
            "spool_files": self.writer.spooled_batches,
            "retries": w.retries,
            "acked": self._acked,
            "queue_depth": self._unacked,
            "backlog_bytes": self._backlog_bytes,
        }
        fields: dict[str, int | float] = {k: counters[k] for k in metrics.INGEST_COUNTERS}
        if latencies:
            fields[metrics.WRITE_LATENCY_P50] = round(statistics.median(latencies) * 1000, 3)
            fields[metrics.WRITE_LATENCY_MAX] = round(max(latencies) * 1000, 3)
        points = [Point(metrics.INGEST, worker, fields, ns, Store.OPS)]
        # Dead letters per reason: the worker's cumulative count and how many are new since the last report.
        reasons = dict(p.reasons)
        before, self._reasons_reported = self._reasons_reported, reasons
        points += [
            Point(
                metrics.DEADLETTERS,
                {**worker, metrics.REASON: r},
                {metrics.COUNT: n, metrics.NEW: n - before.get(r, 0)},
                ns,
                Store.OPS,
            )
            for r, n in reasons.items()
            if n
        ]
        # Readings per sensor since the last report (what "active sensors" and "gateway last seen" count).
        # dict() copies the pipeline thread's counter atomically under the GIL; deltas need no reset.
        series: dict[TagSet, int] = dict(p.series)
        seen, self._series_reported = self._series_reported, series
        points += [
            Point(metrics.SENSORS, tags, {metrics.READINGS: n - seen.get(tags, 0)}, ns, Store.OPS)
            for tags, n in series.items()
            if n != seen.get(tags, 0)
        ]
        lines, bad = render_by_store(points)
        for point, why in bad:
            log.warning("self-metric not written (%s): %s", why, point)
        try:
            for store, ls in lines.items():
                self.influx.write(self.databases[store], join(ls))
        except (InfluxError, ConfigurationError) as exc:
            log.debug("metrics not written: %s", exc)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            ensure_databases(self.influx, self.settings, self.charter)
        except InfluxError as exc:
            log.warning("InfluxDB not reachable at start-up (%s); writes will wait or spool", exc)
        for target, name in ((self._write_loop, "writer"), (self._tick_loop, "ticker")):
            t = threading.Thread(target=target, name=f"ingest-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        m = self.settings.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = m.receive_maximum
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive, clean_start=False, properties=props)
        self.client.loop_start()
        self.failover.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected *and subscribed* (the broker drops what matches no subscription)."""
        return self._connected.wait(timeout)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("ingest worker stopping: %s", exc)
        self.stopping.set()

    def stop(self) -> None:
        """Flush what is in hand, write (or spool) it, ack it, then disconnect."""
        self.stopping.set()
        self.client.on_message = lambda *a: None  # take nothing new; unacked messages get redelivered
        with self._lock:
            self._flush_locked()
        if self._fatal is None:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=60)
        if self._fatal is None:
            self.report_metrics()
        time.sleep(0.1)  # let the network thread send the last acks
        self.failover.announce_offline(self.client)
        self.client.disconnect()
        self.client.loop_stop()
        self.journal.close()
        self.influx.close()
        self.deadletters.close()

    @property
    def fatal(self) -> BaseException | None:
        return self._fatal
