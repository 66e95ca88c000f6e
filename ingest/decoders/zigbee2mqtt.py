"""zigbee2mqtt device messages: ``zigbee2mqtt/<friendly_name>`` with a flat JSON object of states.

Payload (zigbee2mqtt docs, "MQTT topics and messages"):
``{"temperature": 21.5, "humidity": 48.2, "battery": 96, "linkquality": 120, "last_seen": "2024-..."}``.
The device key is the friendly name (which may be the IEEE address, ``0x00158d0001a2b3c4``).
``last_seen`` (when the bridge is configured with ``advanced.last_seen``: ISO 8601 or epoch ms) is the
device time; without it the broker receipt time is used. ``voltage`` is mV on battery devices and V
on plugs: values of 1000 and more are read as a battery voltage in mV. ``illuminance`` is in lux since
Zigbee2MQTT 2.0 (which removed ``illuminance_lux``); a 1.x payload that still has ``illuminance_lux`` uses
it and drops ``illuminance``, which 1.x sent as a raw value for some devices. Bridge topics
(``zigbee2mqtt/bridge/...``) and command topics (``/set``, ``/get``, ``/availability``) are not readings.
"""

from __future__ import annotations

from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError
from smartzone.model import Message, Reading

NAME = "zigbee2mqtt"

FIELDS = {
    "temperature": "weather.temperature",
    "humidity": "weather.relative_humidity",
    "pressure": "weather.pressure",
    "illuminance": "weather.illuminance",
    "illuminance_lux": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm25": "air_quality.pm2_5",
    "pm10": "air_quality.pm10",
    "voc": "air_quality.voc",
    "voc_index": "air_quality.voc_index",
    "occupancy": "parking.occupied",
    "power": "energy.power",
    "energy": "energy.total",
    "current": "energy.current",
    "battery": "gateway_health.battery",
    "linkquality": "gateway_health.link_quality",
}

# States that are device bookkeeping, not measurements.
IGNORED = frozenset(
    {
        "last_seen",
        "elapsed",
        "update",
        "update_available",
        "device",
        "action",
        "state",
        "power_on_behavior",
        "child_lock",
        "led_indication",
        "battery_low",
        "tamper",
        "power_outage_count",
        "device_temperature",
        "voltage",
    }
)
_NOT_READINGS = ("bridge/",)
_COMMAND_SUFFIXES = ("/set", "/get", "/availability")


def decode(msg: Message) -> list[Reading]:
    topic = msg.native_topic
    name = topic.partition("/")[2]
    if not name or name.startswith(_NOT_READINGS) or name.endswith(_COMMAND_SUFFIXES):
        raise DecodeError("not_a_reading", f"zigbee2mqtt topic {topic!r} carries no device state")
    doc = load_json(msg.payload, dict, "zigbee2mqtt payload")
    t = parse_time(doc["last_seen"]) if "last_seen" in doc else msg.received_at
    skip = IGNORED | {"illuminance"} if "illuminance_lux" in doc else IGNORED
    readings = [Reading(t, name, FIELDS.get(k, k), v, msg.gateway_id, NAME) for k, v in doc.items() if k not in skip]
    voltage = doc.get("voltage")
    if isinstance(voltage, int | float) and not isinstance(voltage, bool):
        # zigbee2mqtt reports a battery device's voltage in mV and a plug's mains voltage in V.
        if voltage >= 1000:
            readings.append(Reading(t, name, "gateway_health.battery_voltage", voltage / 1000, msg.gateway_id, NAME))
        else:
            readings.append(Reading(t, name, "energy.voltage", voltage, msg.gateway_id, NAME))
    return readings
