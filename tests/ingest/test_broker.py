"""What the broker we ship does with subscriptions across a restart (Mosquitto 2.0, persistence on).

Plain subscriptions of a persistent session are restored from the persistence file; shared
subscriptions ($share/...) are not: until the client subscribes again, messages for them are
acknowledged to the publisher and dropped. This is why a single worker can use a plain subscription
(``mqtt.share_group = ""``) and why docs/parts/ingest.md says so. If a newer Mosquitto restores shared
subscriptions, the second assertion fails and the advice can change.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateways.publisher import Publisher
from gateways.simulator import Emitted
from tests.conftest import wait_for


def _received_after_restart(mosquitto, topic_filter: str) -> int:
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="restart-probe", protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", mosquitto.port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe(topic_filter, qos=1)
    time.sleep(0.3)
    c.disconnect()  # persistent session with its subscription, no client connected
    c.loop_stop()
    mosquitto.stop()  # clean shutdown writes the persistence file
    mosquitto.start()
    pub = Publisher("127.0.0.1", mosquitto.port, client_id="restart-publisher")
    pub.publish(Emitted(f"probe/{i}", b"x", ()) for i in range(10))
    assert pub.wait_acked(10)  # the broker acknowledged every message
    pub.close()
    c.connect("127.0.0.1", mosquitto.port, clean_start=False, properties=props)  # no new SUBSCRIBE
    c.loop_start()
    time.sleep(1.0)
    c.disconnect()
    c.loop_stop()
    return len(got)


@pytest.mark.parametrize(
    "topic_filter, expected", [("probe/#", 10), ("$share/g/probe/#", 0)], ids=["plain-restored", "shared-forgotten"]
)
def test_subscriptions_across_a_broker_restart(mosquitto, topic_filter, expected):
    assert _received_after_restart(mosquitto, topic_filter) == expected


def _member(port: int, client_id: str, got: list[bytes], *, expiry: int = 3600, receive_maximum: int = 100):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)

    def on_message(cl, u, m):
        got.append(m.payload)
        cl.ack(m.mid, m.qos)

    c.on_message = on_message
    c.present = None  # the CONNACK's session present flag, once connected

    def on_connect(cl, u, flags, rc, p):
        cl.present = flags.session_present

    c.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval, props.ReceiveMaximum = expiry, receive_maximum
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    return c


def _subscribed(c, topic_filter: str) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic_filter, qos=1)
    assert done.wait(5)


def _vanish(c) -> None:
    """Like a SIGKILLed worker: the socket closes without DISCONNECT."""
    c._sock.close()
    c.loop_stop()


def _publish(port: int, prefix: str, n: int) -> None:
    pub = Publisher("127.0.0.1", port, client_id=f"share-publisher-{prefix}")
    pub.publish(Emitted(f"share/{prefix}/{i}", f"{prefix}{i}".encode(), ()) for i in range(n))
    assert pub.wait_acked(10)
    pub.close()


def _count(got: list[bytes], prefix: str) -> int:
    return sum(1 for p in got if p.startswith(prefix.encode()))


def test_share_group_and_offline_sessions(mosquitto):
    """What ``ingest.failover`` relies on, on the broker we ship (measured with Mosquitto 2.0.11):

    1. an offline member's persistent session keeps getting its round-robin share of a group's messages;
    2. a connection with its client id that acks nothing (Receive Maximum 1), unsubscribes and disconnects
       takes it out of the group: new messages all go to the others, and what it held is delivered when
       it returns;
    3. a session that expires takes its queue with it.
    """
    port, group = mosquitto.port, "$share/g/share/#"
    a_got, b_got = [], []
    a = _member(port, "member-a", a_got)
    _subscribed(a, group)
    b = _member(port, "member-b", b_got)
    _subscribed(b, group)
    _vanish(b)
    _publish(port, "x", 100)
    assert wait_for(lambda: _count(a_got, "x") >= 50, 5)
    assert _count(a_got, "x") == 50  # 1. the other half waits in the dead member's session

    held: list[bytes] = []
    stand_in = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="member-b", protocol=mqtt.MQTTv5, manual_ack=True)
    stand_in.on_message = lambda cl, u, m: held.append(m.payload)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval, props.ReceiveMaximum = 3600, 1
    stand_in.connect("127.0.0.1", port, clean_start=False, properties=props)
    stand_in.loop_start()
    left = threading.Event()
    stand_in.on_unsubscribe = lambda *a: left.set()
    stand_in.unsubscribe(group)
    assert left.wait(5)
    stand_in.disconnect()
    stand_in.loop_stop()
    assert len(held) <= 1  # the broker resent at most one, unacknowledged
    _publish(port, "y", 100)
    assert wait_for(lambda: _count(a_got, "y") == 100, 5)  # 2. every new message to the member left
    b = _member(port, "member-b", b_got)  # returns, no SUBSCRIBE needed to get what it held
    assert wait_for(lambda: _count(b_got, "x") == 50, 5)
    assert _count(b_got, "y") == 0
    b.disconnect()
    b.loop_stop()

    c_got: list[bytes] = []
    c = _member(port, "member-c", c_got, expiry=1)
    _subscribed(c, group)
    _vanish(c)
    _publish(port, "z", 100)
    assert wait_for(lambda: _count(a_got, "z") == 50, 5)
    assert wait_for(lambda: "Expiring client member-c" in (mosquitto.data_dir / "mosquitto.log").read_text(), 10)
    c = _member(port, "member-c", c_got, expiry=1)
    assert wait_for(lambda: c.present is not None, 5)
    assert c.present is False and _count(c_got, "z") == 0  # 3. no session: its 50 are gone with it
    c.disconnect()
    c.loop_stop()
    a.disconnect()
    a.loop_stop()
