"""The agent at work: local broker -> spool -> central broker, the centre's commands down, the heartbeat.

Three threads besides paho's two network loops:
- the *writer* takes the local messages (paho's ``manual_ack``: none is acknowledged yet), appends them to the
  spool in batches, fsyncs, and only then acknowledges them to the local broker;
- the *sender* reads the spool oldest first and publishes each record centrally at QoS 1 with up to ``window``
  messages in flight on the one connection (in order per topic: MQTT keeps a connection's order), and gives
  the spool every PUBACK; paho re-sends what was in flight after a reconnect;
- the *heartbeat* publishes ``gw/<id>/health`` every ``health.interval`` seconds;
- the *self-test* runs the checks of ``selftest.py`` at start and every ``selftest.interval`` seconds and publishes
  the result, retained, on ``gw/<id>/selftest``;
- the *experiments* runner (``experiments.py``) takes the centre's ``gw/<id>/experiments/desired`` documents and
  reports on ``gw/<id>/experiments/reported``.

Each relayed message carries the time the agent received it, in µs since the epoch, as the MQTT v5 user
property ``smartzone-received``: the ingest worker takes it as the receipt time, so a copy re-sent after an
outage is the same InfluxDB point as the first (exactly once in the database, though at least once on the wire).
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateways.agent import experiments, health, selftest
from gateways.agent.config import AgentConfig
from gateways.agent.spool import Spool

log = logging.getLogger("gateways.agent")

RECEIVED_PROPERTY = "smartzone-received"  # MQTT v5 user property: the agent's receipt time, µs since the epoch
LORA_PREFIX = "eu868/gateway/"
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code
UNHEARD_PAUSE_S = 1.0  # after a PUBACK said nobody reads a message: wait, then resend from it
SESSION_EXPIRY = 7 * 24 * 3600  # the local broker keeps the agent's subscriptions and queue this long


def central_topic(gateway_id: str, topic: str) -> str:
    """Where a local message goes centrally: under ``gw/<gateway_id>/``, except ChirpStack's gateway topics."""
    return topic if topic.startswith(LORA_PREFIX) else f"gw/{gateway_id}/{topic}"


def local_topic(gateway_id: str, topic: str) -> str | None:
    """Where a central command goes locally (None: not one the agent relays down; the experiments' desired
    document is the agent's own business, see experiments.py)."""
    if topic.startswith(LORA_PREFIX):
        return topic
    return None


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        root: Path = Path("/"),
        window: int = 200,  # paho re-scans its in-flight messages on every PUBACK: a bigger window is slower
        batch: int = 2000,
        clock: Any = time.time_ns,
        hold_unheard: float = 600.0,
    ) -> None:
        self.cfg = cfg
        self.root = root
        self.window = window
        self.batch = batch
        self._clock = clock
        self.spool = Spool(cfg.spool.dir, cfg.spool.max_bytes)
        self.stopping = threading.Event()
        self._incoming: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._acks: deque[tuple[int, int]] = deque()
        self._inflight: dict[int, int] = {}  # central mid -> spool seq (the sender's own)
        self._last_stamp = 0
        self.heard = health.Heard()
        self._cpu = health.CpuSample()
        self.refused = 0
        self.relayed = 0
        # MQTT v5 PUBACK 0x10 "no matching subscribers": the centre took the message but nobody reads it yet
        # (Mosquitto 2.0 restores no shared subscription after a restart until the workers subscribe again).
        # The agent keeps it and resends from there, for up to `hold_unheard` seconds per record.
        self.hold_unheard = hold_unheard
        self.unheard = 0  # PUBACKs that said nobody read the message (each resent)
        self.unheard_given_up = 0  # records nobody read within hold_unheard, given up (logged)
        self._unheard_from: int | None = None  # the oldest seq to resend
        self._unheard_since: dict[int, float] = {}  # seq -> when the centre first had no reader for it
        self._resume_at = 0.0
        self.central_up = threading.Event()
        self.local_up = threading.Event()
        self.status_topic = f"gw/{cfg.gateway_id}/status"
        self.health_topic = f"gw/{cfg.gateway_id}/health"
        self.selftest_topic = f"gw/{cfg.gateway_id}/selftest"
        self.desired_topic = f"gw/{cfg.gateway_id}/experiments/desired"
        self._threads: list[threading.Thread] = []
        self.local = self._local_client()
        self.central = self._central_client()
        self.experiments = experiments.Runner(cfg, self._publish_retained, clock=lambda: self._clock() / 1e9)

    # -- clients ---------------------------------------------------------------------------------------
    def _local_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"smartzone-agent-{self.cfg.gateway_id}",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        c.on_connect = self._on_local_connect
        c.on_disconnect = self._on_local_disconnect
        c.on_message = self._on_local_message
        c.reconnect_delay_set(1, 5)
        return c

    def _central_client(self) -> mqtt.Client:
        cfg = self.cfg
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.gateway_id, protocol=mqtt.MQTTv5)
        password = cfg.password()
        if cfg.central.username or password:
            c.username_pw_set(cfg.central.username or cfg.gateway_id, password)
        if cfg.central.ca_file is not None:
            c.tls_set(ca_certs=str(cfg.central.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        c.max_inflight_messages_set(self.window)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_central_connect
        c.on_disconnect = self._on_central_disconnect
        c.on_publish = self._on_central_publish
        c.on_message = self._on_central_message
        return c

    def start(self) -> Agent:
        cfg = self.cfg
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        self.local.connect_async(cfg.local.host, cfg.local.port, keepalive=30, clean_start=False, properties=props)
        self.local.loop_start()
        self.central.connect_async(
            cfg.central.host, cfg.central.port, keepalive=cfg.central.keepalive, clean_start=True
        )
        self.central.loop_start()
        self.experiments.start()
        threads = (
            ("writer", self._writer),
            ("sender", self._sender),
            ("heartbeat", self._heartbeat),
            ("selftest", self._selftester),
        )
        for name, target in threads:
            t = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "agent started gateway=%s local=%s:%d central=%s:%d spool=%s backlog=%d",
            cfg.gateway_id,
            cfg.local.host,
            cfg.local.port,
            cfg.central.host,
            cfg.central.port,
            cfg.spool.dir,
            self.spool.backlog(),
        )
        return self

    def stop(self) -> None:
        """Finish: spool what has arrived, say offline, close the connections and the spool."""
        self.stopping.set()
        self._wake.set()
        self.experiments.stop()  # their processes go on: the next start re-adopts them
        for t in self._threads:
            t.join(10)
        self.local.disconnect()
        self.local.loop_stop()
        if self.central_up.is_set():
            self.central.publish(self.status_topic, b"offline", qos=1, retain=True).wait_for_publish(2)
        self.central.disconnect()
        self.central.loop_stop()
        self.spool.close()
        log.info("agent stopped backlog=%d", self.spool.backlog())

    # -- local side -----------------------------------------------------------------------------------
    def _on_local_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("local broker refused the agent: %s", rc)
            return
        opts = SubscribeOptions(qos=1, noLocal=True)  # never the commands the agent itself relays down
        if self.cfg.local.relay:
            client.subscribe([(f, opts) for f in self.cfg.local.relay])
        self.local_up.set()
        log.info(
            "local broker connected session_present=%s relay=%s", flags.session_present, list(self.cfg.local.relay)
        )

    def _on_local_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.local_up.clear()
        if not self.stopping.is_set():
            log.warning("local broker connection lost: %s; reconnecting", rc)

    def _on_local_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        stamp = self._clock() // 1000
        if stamp <= self._last_stamp:  # one stamp per message: two copies of a reading never share a time
            stamp = self._last_stamp + 1
        self._last_stamp = stamp
        self._incoming.put((stamp, m.topic, bytes(m.payload), m.mid, m.qos))

    def _writer(self) -> None:
        q = self._incoming
        while True:
            try:
                first = q.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            items = [first]
            while len(items) < self.batch:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                self.spool.append((stamp, topic, payload) for stamp, topic, payload, _mid, _qos in items)
            except OSError:  # disk gone or full: not acknowledged, the local broker delivers them again
                log.exception("cannot write the spool; %d messages left unacknowledged", len(items))
                time.sleep(1)
                continue
            now = time.monotonic()
            for _stamp, topic, _payload, mid, qos in items:
                self.heard.saw(topic, now)
                if qos > 0:
                    self.local.ack(mid, qos)
            self._wake.set()

    # -- central side ---------------------------------------------------------------------------------
    def _on_central_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("central broker refused the agent: %s (check central.username and the password file)", rc)
            return
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        downward = [self.desired_topic]
        if self.cfg.lora_eui:
            # ChirpStack and its Gateway Bridge write gateway EUIs lower-case in topics (the config's is upper-case)
            downward.append(f"{LORA_PREFIX}{self.cfg.lora_eui.lower()}/command/#")
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in downward])
        self._publish_health()  # at once, before the replay starts: the centre sees the backlog it is about to get
        self.experiments.republish()
        self.central_up.set()
        self._wake.set()
        log.info("central broker connected backlog=%d", self.spool.backlog())

    def _on_central_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.central_up.clear()
        if not self.stopping.is_set():
            log.warning("central broker connection lost: %s; spooling, backlog=%d", rc, self.spool.backlog())

    def _on_central_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._acks.append((mid, rc.value))  # paho holds its own lock here: the sender does the work
        self._wake.set()

    def _on_central_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        if m.topic == self.desired_topic:
            self.experiments.desired(bytes(m.payload))
            return
        target = local_topic(self.cfg.gateway_id, m.topic)
        if target is None:
            return
        self.local.publish(target, m.payload, qos=1, retain=m.retain)

    def _sender(self) -> None:
        last_save = time.monotonic()
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            done = self._take_acks()
            if done:
                self.spool.ack(done)
            if self._unheard_from is not None:
                # nobody read one: forget what is in flight (its PUBACKs are ignored), wait a moment for the
                # centre's subscribers, and resend in order from the oldest unread (copies are idempotent:
                # each carries the agent's receipt stamp)
                self.spool.rewind(self._unheard_from)
                self._inflight.clear()
                self._unheard_from = None
                self._resume_at = time.monotonic() + UNHEARD_PAUSE_S
            now = time.monotonic()
            if now - last_save > 0.2:
                self.spool.save()
                last_save = now
            if self.stopping.is_set():
                self.spool.save()
                return
            if not self.central_up.is_set() or time.monotonic() < self._resume_at:
                continue
            room = self.window - len(self._inflight)
            if room <= 0:
                continue
            entries = self.spool.read(room)
            gid = self.cfg.gateway_id
            for e in entries:
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = (RECEIVED_PROPERTY, str(e.stamp_us))
                info = self.central.publish(central_topic(gid, e.topic), e.payload, qos=1, properties=props)
                self._inflight[info.mid] = e.seq
            if entries:
                self.relayed += len(entries)
                self._wake.set()  # more may be waiting

    def _take_acks(self) -> list[int]:
        done = []
        acks, inflight = self._acks, self._inflight
        while acks:
            mid, code = acks.popleft()
            seq = inflight.pop(mid, None)
            if seq is None:
                continue  # the heartbeat's or the status's
            if code == NO_MATCHING_SUBSCRIBERS:
                first = self._unheard_since.setdefault(seq, time.monotonic())
                if time.monotonic() - first < self.hold_unheard:
                    self.unheard += 1
                    self._unheard_from = seq if self._unheard_from is None else min(self._unheard_from, seq)
                    continue  # not done: resent from the spool
                self.unheard_given_up += 1
                log.error(
                    "no subscriber at the centre read spool message seq=%d for %.0f s: given up; is the ingest "
                    "worker (or ChirpStack, for eu868/ topics) running?",
                    seq,
                    self.hold_unheard,
                )
            self._unheard_since.pop(seq, None)
            if code >= 0x80:
                self.refused += 1
                log.error(
                    "central broker refused spool message seq=%d (reason 0x%02x): dropped; check the gateway's ACL",
                    seq,
                    code,
                )
            done.append(seq)
        return done

    # -- heartbeat ------------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        s = self.cfg.selftest
        oldest = self.spool.oldest_stamp()
        doc = health.collect(
            self.root,
            spool_dir=self.cfg.spool.dir,
            backlog=self.spool.backlog(),
            backlog_bytes=self.spool.size(),
            oldest_stamp_us=oldest,
            dropped=self.spool.dropped,
            heard=self.heard,
            radio_devices={"zigbee": s.zigbee_serial, "ble": f"/sys/class/bluetooth/{s.hci}", "lora": s.spi_device},
            cpu=self._cpu,
            now=self._clock() / 1e9,
        )
        doc["refused"] = self.refused
        doc["unheard"] = self.unheard
        return doc

    def _heartbeat(self) -> None:
        interval = self.cfg.health.interval
        next_at = time.monotonic()
        while not self.stopping.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            if self.central_up.is_set():
                self._publish_health()

    def _publish_health(self) -> None:
        try:
            doc = self.health()
        except Exception:  # a health probe must never stop the relay
            log.exception("heartbeat failed")
            return
        self.central.publish(self.health_topic, json.dumps(doc, separators=(",", ":")).encode(), qos=1)

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        """QoS 1, retained; while the centre is away paho queues it and sends it on reconnect."""
        self.central.publish(topic, payload, qos=1, retain=True)

    # -- periodic self-test -----------------------------------------------------------------------------
    def selftest(self) -> dict[str, object]:
        """The self-test checks as the contract's ``gw/<id>/selftest`` document. The two broker checks are the
        agent's own connections: a second client with the gateway's id would take over the agent's central
        session, and a round trip through the local broker would be relayed to the centre (under a ``#``
        relay filter) where nobody reads it."""
        cfg = selftest.load_config(self.cfg.path) if self.cfg.path is not None else None
        if cfg is None:
            raise RuntimeError("no agent.toml path: the self-test needs it")

        def central(ctx: selftest.Context) -> str:
            if not self.central_up.is_set():
                raise selftest.Failed(
                    f"the agent is not connected to the central broker {self.cfg.central.host}:{self.cfg.central.port}",
                    "see the agent's log (`journalctl -u smartzone-gateway-agent`)",
                )
            return f"the agent is connected as {self.cfg.central.username or self.cfg.gateway_id}"

        def local(ctx: selftest.Context) -> str:
            if not self.local_up.is_set():
                raise selftest.Failed(
                    f"the agent is not connected to the local broker {self.cfg.local.host}:{self.cfg.local.port}",
                    "`systemctl status mosquitto`; the agent's log (`journalctl -u smartzone-gateway-agent`)",
                )
            return f"the agent is connected to {self.cfg.local.host}:{self.cfg.local.port} ({self.relayed} relayed)"

        own = {"central_broker": central, "local_broker": local}
        checks = tuple(
            selftest.Check(c.name, c.what, own[c.name], c.applies, c.needs) if c.name in own else c
            for c in selftest.CHECKS
        )
        result = selftest.run(cfg, self.root, checks)
        out = [{"name": n, "ok": True, "detail": result["details"][n]} for n in result["success"]]
        out += [{"name": e["check"], "ok": False, "detail": f"{e['problem']}; do: {e['fix']}"} for e in result["error"]]
        out += [{"name": s["check"], "ok": True, "detail": f"skipped: {s['reason']}"} for s in result["skipped"]]
        order = [c.name for c in checks]
        out.sort(key=lambda c: order.index(str(c["name"])))
        now = datetime.fromtimestamp(self._clock() / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"time": now, "failed": result["ret"], "checks": out}

    def _selftester(self) -> None:
        self.central_up.wait(10)  # the first run at start, once connected (or 10 s later: it then says so)
        while not self.stopping.is_set():
            try:
                doc = self.selftest()
            except Exception:  # a check that breaks must not stop the agent
                log.exception("self-test failed to run")
            else:
                log.info("self-test: %d failed", doc["failed"])
                self._publish_retained(self.selftest_topic, json.dumps(doc, separators=(",", ":")).encode())
            if self.stopping.wait(self.cfg.selftest.interval):
                return
