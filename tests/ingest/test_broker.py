"""What the broker we ship does with subscriptions across a restart (Mosquitto 2.0, persistence on).

Plain subscriptions of a persistent session are restored from the persistence file; shared
subscriptions ($share/...) are not: until the client subscribes again, messages for them are
acknowledged to the publisher and dropped. This is why a single worker can use a plain subscription
(``mqtt.share_group = ""``) and why docs/parts/ingest.md says so. If a newer Mosquitto restores shared
subscriptions, the second assertion fails and the advice can change.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateways.publisher import Publisher
from gateways.simulator import Emitted


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
