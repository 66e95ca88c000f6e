"""BLE sensors decoded by Theengs Gateway or OpenMQTTGateway: ``<base>/<gateway>/BTtoMQTT/<MAC>``.

Payload (Theengs Decoder docs, "Using with ESP32"; Theengs Gateway publishes the same object):
``{"id":"AA:BB:CC:DD:EE:FF","name":"ATC_800021","rssi":-90,"servicedatauuid":"0x181a","brand":"Xiaomi",
"model":"LYWSD03MMC","model_id":"LYWSD03MMC_ATC","tempc":26.3,"tempf":79.34,"hum":49,"batt":29,
"volt":2.487}``. Property names and units are Theengs Decoder's: ``tempc`` °C, ``hum`` %, ``pres`` hPa,
``lux`` lx, ``co2`` ppm, ``pm25``/``pm10`` µg/m³, ``batt`` %, ``volt`` V (the battery), ``rssi`` dBm.

The device key is the BLE MAC from ``id``, normalised to upper case with colons
(``smartzone.registry.normalise_key``), else the last topic level when it is a MAC without colons
(``A4C138AABBCC``); neither is ``missing_device``. ``<base>/<gateway>/BTtoMQTT/undecoded`` carries raw
advertisements for an external decoder and is not a reading. BLE advertisements carry no device time:
the broker receipt time is used. Identity and radio bookkeeping (``id``, ``name``, ``brand``, ``model``,
``manufacturerdata`` ...) and the derived ``tempf`` (Fahrenheit copy of ``tempc``) and ``dp`` (dew point)
are dropped; every other property is emitted, unmapped ones under their Theengs name. Values are
emitted as published: old OpenMQTTGateway versions sent numbers as strings (``"tempc":"19.2"``), which
the pipeline rejects.
"""

from __future__ import annotations

import re

from ingest.decoders._json import load_json
from smartzone.errors import DecodeError
from smartzone.model import Message, Reading
from smartzone.registry import normalise_key

NAME = "ble_gateway"

FIELDS = {
    "tempc": "weather.temperature",
    "hum": "weather.relative_humidity",
    "pres": "weather.pressure",
    "lux": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm1": "air_quality.pm1",
    "pm25": "air_quality.pm2_5",
    "pm10": "air_quality.pm10",
    "batt": "gateway_health.battery",
    "volt": "gateway_health.battery_voltage",
    "rssi": "gateway_health.rssi",
}

# Identity, radio and decoder bookkeeping, and values derived from others.
IGNORED = frozenset(
    {
        "id",
        "mac",
        "mac_type",
        "name",
        "brand",
        "model",
        "model_id",
        "type",
        "mfid",
        "mfr",
        "cidc",
        "manufacturerdata",
        "servicedata",
        "servicedatauuid",
        "uuid",
        "major",
        "minor",
        "txpower",
        "tx",
        "distance",
        "acts",
        "cont",
        "track",
        "packet",
        "seq",
        "prmac",
        "prmacid",
        "adv_data",
        "tempf",
        "dp",
    }
)
_NOT_READINGS = ("undecoded",)
_MAC_LEVEL = re.compile(r"[0-9A-Fa-f]{12}")


def decode(msg: Message) -> list[Reading]:
    topic = msg.native_topic
    last = topic.rstrip("/").rpartition("/")[2]
    if last in _NOT_READINGS:
        raise DecodeError("not_a_reading", f"BLE topic {topic!r} carries undecoded advertisements")
    doc = load_json(msg.payload, dict, "BLE gateway payload")
    key = doc.get("id")
    if not isinstance(key, str) or not key.strip():
        key = last if _MAC_LEVEL.fullmatch(last) else ""
    if not key.strip():
        raise DecodeError("missing_device", f"BLE message on {topic!r} has no id and no MAC in its topic")
    device = normalise_key(key)
    t = msg.received_at
    return [Reading(t, device, FIELDS.get(k, k), v, msg.gateway_id, NAME) for k, v in doc.items() if k not in IGNORED]
