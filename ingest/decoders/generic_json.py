"""Generic JSON: Smart Zone's own format for devices that run no standard gateway software.

Topic: ``json/<device>`` below the gateway (``gw/<gateway_id>/json/<device>`` on the central broker).

Payload: one JSON object, or a JSON array of such objects (a batch, decoded in order)::

    {
      "device": "aq-07",                      optional string; default: the last topic level
      "time": "2024-05-01T12:00:00+02:00",    optional; default: the broker receipt time
      "readings": {                           required object: name -> value
        "air_quality.co2": 612,
        "weather.temperature": 21.4,
        "co2_raw": 1873
      }
    }

- ``device`` is the gateway-local device key the sensor registry knows; an object without it uses the
  last level of the topic, and with neither the message is ``missing_device``.
- ``time`` is ISO 8601 with a UTC offset or ``Z``, or a number of seconds since the epoch (numbers above
  1e11 are milliseconds). ISO text without an offset is the gateway's local time (its registry time
  zone); a gateway without one makes it ``bad_timestamp``.
- ``readings`` names are quantity keys of the Smart Zone vocabulary (``air_quality.co2``), a few short
  aliases (``FIELDS``: ``temperature``, ``co2``, ``pm2_5`` ...), or any other native name, which the
  registry's per-sensor ``fields`` can map. Values are numbers or booleans in the vocabulary's units;
  ``null`` means "no value this time" and is skipped. Every other value is emitted as sent and checked by
  the pipeline, including the non-standard literals ``NaN`` and ``Infinity`` that firmware JSON writers
  produce for a failed sensor read: that one value is dead-lettered as not finite, the others are kept.
- Any other key in an object, a non-object item, or ``readings`` that is not an object is ``malformed``.
"""

from __future__ import annotations

from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError
from smartzone.model import Message, Reading

NAME = "generic_json"

FIELDS: dict[str, str] = {
    "temperature": "weather.temperature",
    "humidity": "weather.relative_humidity",
    "pressure": "weather.pressure",
    "illuminance": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm1": "air_quality.pm1",
    "pm2_5": "air_quality.pm2_5",
    "pm10": "air_quality.pm10",
    "no2": "air_quality.no2",
    "laeq": "noise.laeq",
    "battery": "gateway_health.battery",
    "rssi": "gateway_health.rssi",
}

# Reading names that are never measurements (the format has no bookkeeping inside ``readings``).
IGNORED: frozenset[str] = frozenset()

_KEYS = frozenset({"device", "time", "readings"})
_new = tuple.__new__  # Reading(...) without the Python frame of NamedTuple.__new__ (hot path)


def _decode_one(item: object, index: int, msg: Message, topic_device: str) -> list[Reading]:
    if not isinstance(item, dict):
        raise DecodeError("malformed", f"item {index} is not a JSON object")
    if not _KEYS.issuperset(item):
        unknown = set(item) - _KEYS
        raise DecodeError("malformed", f"item {index}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    device = item.get("device", topic_device)
    if not isinstance(device, str):
        raise DecodeError("malformed", f"item {index}: 'device' must be a string")
    if not device.strip():
        raise DecodeError("missing_device", f"item {index}: no 'device' and no device level in the topic")
    values = item.get("readings")
    if not isinstance(values, dict):
        raise DecodeError("malformed", f"item {index}: 'readings' must be a JSON object of name -> value")
    t = parse_time(item["time"], msg.tz) if "time" in item else msg.received_at
    return [
        _new(Reading, (t, device, FIELDS.get(k) or k, v, msg.gateway_id, NAME))
        for k, v in values.items()
        if v is not None and k not in IGNORED
    ]


def decode(msg: Message) -> list[Reading]:
    doc = load_json(msg.payload, (dict, list), "a generic JSON payload")
    levels = msg.native_topic.strip("/").split("/")
    topic_device = levels[-1] if len(levels) >= 2 else ""  # a bare "json" topic names no device
    items = doc if isinstance(doc, list) else [doc]
    readings: list[Reading] = []
    for i, item in enumerate(items):
        readings.extend(_decode_one(item, i, msg, topic_device))
    return readings
