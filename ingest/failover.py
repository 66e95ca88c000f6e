"""Failover between the ingest workers of one share group, on Mosquitto 2.0 as shipped.

What the broker does (measured with 2.0.11, pinned by ``tests/ingest/test_broker.py``): a share group's
messages go round-robin to its members' sessions whether or not the member is connected, so a dead
worker's persistent session keeps receiving its share and holds it until the worker returns; when a
session expires, its queue is discarded. A session leaves the group only by UNSUBSCRIBE, which only a
connection with that session's client id can send.

So each worker:

- keeps a retained status on ``smartzone/ingest/<client_id>/status``: ``online`` when it connects; its
  last will, delayed by ``mqtt.failover_after`` seconds (MQTT v5 Will Delay Interval: a worker that
  reconnects sooner sends none), and a clean stop say ``offline``;
- watches the status of the peers named in ``mqtt.peers``. When one goes offline, and this worker is
  itself connected and subscribed (so the group keeps a member), it connects *as the peer* (client id,
  clean start off, the same session expiry, Receive Maximum 1), acknowledges nothing, unsubscribes the
  peer's shared filters and disconnects. New messages then go only to the workers still in the group.
  Everything the peer held (in flight and queued) stays unacknowledged in its session and is delivered
  again when the peer returns, through its own receipt journal: nothing is written by the stand-in, so
  nothing can be written twice. The returning peer subscribes again on connect and rejoins the group.

A stand-in connection found no session (the peer's expired, or never existed) removes the empty one it
made (DISCONNECT with session expiry 0).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.pipeline import subscriptions
from smartzone.errors import ConfigurationError
from smartzone.settings import PeerSettings, Settings

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
RETRY_S = 5.0  # a stand-in connection that failed is tried again after this long, while the peer is offline


def status_topic(client_id: str) -> str:
    return f"smartzone/ingest/{client_id}/status"


class Failover:
    """Announces this worker's status and takes dead peers' sessions out of the share group.

    ``in_group`` is set while this worker is connected and subscribed (the worker's own event).
    """

    def __init__(self, settings: Settings, in_group: threading.Event, stopping: threading.Event, expiry_s: int):
        self.settings = settings
        self.mqtt = settings.mqtt
        self.in_group = in_group
        self.stopping = stopping
        self.expiry_s = expiry_s
        self.peers = {p.client_id: p for p in self.mqtt.peers}
        for p in self.mqtt.peers:
            p.credentials()  # a password file we cannot read is a configuration error, at start-up
        self._status: dict[str, bytes] = {}
        self._offline_since: dict[str, float] = {}
        self._events: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- on the worker's own client ---------------------------------------------------------------
    def attach(self, client: mqtt.Client) -> None:
        """Before connecting: the last will, and a callback for the peers' status."""
        props = Properties(PacketTypes.WILLMESSAGE)
        props.WillDelayInterval = self.mqtt.failover_after
        client.will_set(status_topic(self.mqtt.client_id), OFFLINE, qos=1, retain=True, properties=props)
        for cid in self.peers:
            client.message_callback_add(status_topic(cid), self._on_status)

    def on_connect(self, client: mqtt.Client) -> int | None:
        """Announce ``online``; subscribe to the peers' status (QoS 0: retained, resent on every connect).
        Returns the SUBSCRIBE's packet id, if any."""
        client.publish(status_topic(self.mqtt.client_id), ONLINE, qos=1, retain=True)
        if not self.peers:
            return None
        _, mid = client.subscribe([(status_topic(cid), mqtt.SubscribeOptions(qos=0)) for cid in self.peers])
        return mid

    def announce_offline(self, client: mqtt.Client) -> None:
        """On a clean stop (no will is sent then): peers take over the new traffic at once."""
        if client.is_connected():
            info = client.publish(status_topic(self.mqtt.client_id), OFFLINE, qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)

    def _on_status(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        cid = m.topic.split("/")[2]
        state = bytes(m.payload)
        before = self._status.get(cid)
        self._status[cid] = state
        if state == OFFLINE and before != OFFLINE:
            self._offline_since[cid] = time.monotonic()
            log.warning("ingest peer %s is offline", cid)
            self._events.put(cid)
        elif state == ONLINE and before == OFFLINE:
            log.info("ingest peer %s is back online", cid)

    # -- the stand-in -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.peers:
            self._thread = threading.Thread(target=self._loop, name="ingest-failover", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        due: dict[str, float] = {}  # offline peer -> when to try (again)
        while not self.stopping.is_set():
            with contextlib.suppress(queue.Empty):
                due[self._events.get(timeout=0.2)] = 0.0
            now = time.monotonic()
            for cid, at in list(due.items()):
                if self._status.get(cid) != OFFLINE:
                    del due[cid]  # it came back first
                elif at <= now and self.in_group.is_set():  # never leave the group without a member
                    if self.release(self.peers[cid]):
                        del due[cid]
                    else:
                        due[cid] = now + RETRY_S

    def release(self, peer: PeerSettings) -> bool:
        """Connect as ``peer``, take its session out of the share group, keep everything it holds."""
        m = self.mqtt
        try:
            creds = peer.credentials()
        except ConfigurationError as exc:
            log.error("cannot stand in for ingest peer %s: %s", peer.client_id, exc)
            return False
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=peer.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        if creds is not None:
            c.username_pw_set(*creds)
        if m.tls:
            c.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None)
        c.on_message = lambda *a: None  # what the broker resends is left unacknowledged, in the session
        connected, unsubscribed = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def on_connect(cl: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Any) -> None:
            outcome["rc"], outcome["present"] = rc, flags.session_present
            connected.set()

        c.on_connect = on_connect
        c.on_unsubscribe = lambda *a: unsubscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.expiry_s  # the peer's own: its session must outlive us
        props.ReceiveMaximum = 1  # the broker resends at most one message to us
        try:
            c.connect(m.host, m.port, keepalive=m.keepalive, clean_start=False, properties=props)
        except OSError as exc:
            log.warning("cannot stand in for ingest peer %s: %s", peer.client_id, exc)
            return False
        c.loop_start()
        try:
            if not connected.wait(10) or outcome["rc"].is_failure:
                log.error("broker refused us as ingest peer %s: %s", peer.client_id, outcome.get("rc", "no answer"))
                return False
            if not outcome["present"]:
                gone = Properties(PacketTypes.DISCONNECT)
                gone.SessionExpiryInterval = 0  # the empty session we just made
                c.disconnect(properties=gone)
                log.warning("ingest peer %s has no session on the broker: nothing to take over", peer.client_id)
                return True
            group = m.share_group
            ing = self.settings.ingest  # every filter the peer's session may hold: today's and its routes'
            held = dict.fromkeys([*subscriptions(ing.routes, ing.watch), *(r.filter for r in ing.routes)])
            c.unsubscribe([f"$share/{group}/{f}" for f in held])
            if not unsubscribed.wait(10):
                log.warning("ingest peer %s: no UNSUBACK", peer.client_id)
                return False
            c.disconnect()  # the session stays, with what it holds, for the peer's return
            took = time.monotonic() - self._offline_since.get(peer.client_id, time.monotonic())
            log.warning(
                "took ingest peer %s out of share group %s %.2f s after its offline status: new messages go to the "
                "workers still running; what it held stays in its session until it returns",
                peer.client_id,
                group,
                took,
            )
            return True
        finally:
            c.loop_stop()
