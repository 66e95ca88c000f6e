"""ESPHome MQTT state topics: ``<prefix>/sensor/<object_id>/state`` and ``<prefix>/binary_sensor/<object_id>/state``.

Topics (ESPHome docs, "MQTT Client Component", "MQTT Component Base Configuration"): the state topic
defaults to ``<TOPIC_PREFIX>/<COMPONENT_TYPE>/<COMPONENT_NAME>/state``, the prefix defaults to the node
name and may have several levels (``home/living_room``, or ``<node>/<sub-device>`` with
``sub_device_topics``). The payload is plain text: a sensor publishes its value formatted to its
``accuracy_decimals`` (``21.5``, ``612``), a binary sensor ``ON`` or ``OFF``.

The device key is the topic prefix (everything before the component type: the node name by
default), the field is the object id (``FIELDS.get(object_id, object_id)``). ESPHome publishes no device
time: the broker receipt time is used. A sensor value without a decimal point or exponent is an int,
others are floats; ``ON``/``OFF`` are ``True``/``False``.

An unavailable sensor publishes ``nan`` (or ``None`` with ``publish_nan_as_none``): that is no reading,
raised as ``not_a_reading`` like the ``<prefix>/status`` availability topic, command topics and other
component types (switch, light, text_sensor ...). Any other non-number on a sensor topic, or a binary
sensor payload other than ``ON``/``OFF``, is ``malformed``.
"""

from __future__ import annotations

import re

from smartzone.errors import DecodeError
from smartzone.model import Message, Reading

NAME = "esphome"

FIELDS = {
    "temperature": "weather.temperature",
    "humidity": "weather.relative_humidity",
    "pressure": "weather.pressure",
    "illuminance": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm_1_0": "air_quality.pm1",
    "pm1": "air_quality.pm1",
    "pm_2_5": "air_quality.pm2_5",
    "pm25": "air_quality.pm2_5",
    "pm_10_0": "air_quality.pm10",
    "pm_10": "air_quality.pm10",
    "pm10": "air_quality.pm10",
    "no2": "air_quality.no2",
    "tvoc": "air_quality.voc",
    "voc_index": "air_quality.voc_index",
    "noise_level": "noise.laeq",
    "laeq": "noise.laeq",
    "power": "energy.power",
    "energy": "energy.total",
    "voltage": "energy.voltage",
    "current": "energy.current",
    "power_factor": "energy.power_factor",
    "battery_level": "gateway_health.battery",
    "battery_voltage": "gateway_health.battery_voltage",
    "wifi_signal": "gateway_health.rssi",
    "uptime": "gateway_health.uptime",
    "occupancy": "parking.occupied",
}

# Object ids that are availability, not measurements (a ``status`` binary sensor given its own topic).
IGNORED = frozenset({"status"})

_COMPONENTS = ("sensor", "binary_sensor")
_UNAVAILABLE = frozenset({"nan", "-nan", "none"})
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BINARY = {"ON": True, "OFF": False}


def _number(text: str, topic: str) -> int | float:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.lower() in _UNAVAILABLE:
        raise DecodeError("not_a_reading", f"{topic}: sensor state {text!r} (unavailable)")
    raise DecodeError("malformed", f"{topic}: sensor state {text!r} is not a number")


def decode(msg: Message) -> list[Reading]:
    topic = msg.native_topic
    levels = topic.split("/")
    if len(levels) < 4 or levels[-1] != "state" or levels[-3] not in _COMPONENTS or levels[-2] in IGNORED:
        raise DecodeError("not_a_reading", f"ESPHome topic {topic!r} is not a sensor state topic")
    device = "/".join(levels[:-3])
    component, object_id = levels[-3], levels[-2]
    if not device or not object_id:
        raise DecodeError("missing_device", f"ESPHome topic {topic!r} names no node or no entity")
    try:
        text = msg.payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError("malformed", f"{topic}: payload is not UTF-8 text") from exc
    if component == "binary_sensor":
        if text not in _BINARY:
            raise DecodeError("malformed", f"{topic}: binary sensor state {text!r} is not ON or OFF")
        value: int | float | bool = _BINARY[text]
    else:
        value = _number(text, topic)
    return [Reading(msg.received_at, device, FIELDS.get(object_id, object_id), value, msg.gateway_id, NAME)]
