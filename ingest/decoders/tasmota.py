"""Tasmota sensor telemetry: ``tele/<topic>/SENSOR`` with a JSON object of sensor objects.

Payload (Tasmota docs, "BME280 temperature, humidity and pressure sensor"):
``{"Time":"2019-11-03T19:34:28","BME280":{"Temperature":21.7,"Humidity":66.6,"Pressure":988.6},
"PressureUnit":"hPa","TempUnit":"C"}``. Energy monitors add ``"ENERGY":{"Total":..,"Power":..,
"Voltage":..,"Current":..,"Factor":..}``.

The device key is the Tasmota ``<topic>`` (the topic levels other than ``tele`` and ``SENSOR``, so a
``%topic%/%prefix%/`` FullTopic works too). Every top-level JSON object is one sensor (``BME280``,
``SDS0X1``, ``ENERGY`` ...); its fields are read by inner name through ``FIELDS``, so two sensors with the
same field on one device (an AM2301 and a DS18B20 both reporting ``Temperature``) give two readings of
the same quantity for the same device: register such a device once per sensor type. Top-level scalars
(``Time``, the unit keys, ``Switch1``, ``IP`` ...) and objects nested inside a sensor (the energy chip's own
``{"BL09XX":{"Temperature":..}}``) are not readings. A field holding a list is one value per channel
(multi-channel energy monitors: ``"Power":[52,5]``); channel ``n`` (from 1) gets the device key
``<topic>/<n>``.

``Time`` is local time without a zone: it is read in the gateway's time zone from the registry, and a
gateway without one is a ``bad_timestamp``. ``Epoch`` (seconds, UTC), when present, wins. Without either
the broker receipt time is used. ``TempUnit`` ``F`` is converted to Celsius; ``PressureUnit`` must be ``hPa``
(or ``mbar``) or is converted from ``mmHg`` / ``inHg``; another unit is ``unit_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable

from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError
from smartzone.model import Message, Reading

NAME = "tasmota"

FIELDS: dict[str, str] = {
    "Temperature": "weather.temperature",
    "Humidity": "weather.relative_humidity",
    "Pressure": "weather.pressure",
    "Illuminance": "weather.illuminance",
    "CarbonDioxide": "air_quality.co2",
    "PM1": "air_quality.pm1",
    "PM2.5": "air_quality.pm2_5",
    "PM10": "air_quality.pm10",
    "TVOC": "air_quality.voc",
    "Total": "energy.total",
    "Power": "energy.power",
    "Voltage": "energy.voltage",
    "Current": "energy.current",
    "Factor": "energy.power_factor",
}

# Sensor fields that are derived, cumulative per day, identifiers or raw duplicates, not measurements.
IGNORED = frozenset(
    {
        "TotalStartTime",
        "Yesterday",
        "Today",
        "Period",
        "ApparentPower",
        "ReactivePower",
        "DewPoint",
        "Id",
        "Model",
        "TotalTariff",
        "ExportTariff",
        # PMS5003: "CF=1" concentrations duplicate PM*, PB* are particle counts per 0.1 l
        "CF1",
        "CF2.5",
        "CF10",
        "PB0.3",
        "PB0.5",
        "PB1",
        "PB2.5",
        "PB5",
        "PB10",
    }
)

_PRESSURE_FIELDS = frozenset({"Pressure", "SeaPressure"})
_TEMP_UNITS: dict[str, Callable[[float], float]] = {"C": lambda x: x, "F": lambda x: (x - 32) / 1.8}
_PRESSURE_UNITS: dict[str, Callable[[float], float]] = {
    "hPa": lambda x: x,
    "mbar": lambda x: x,
    "mmHg": lambda x: x * 1013.25 / 760,  # 1 atm = 760 mmHg
    "inHg": lambda x: x * 33.86389,  # 1 inHg = 3386.389 Pa
}


def _unit(doc: dict, key: str, table: dict[str, Callable[[float], float]], default: str) -> Callable[[float], float]:
    unit = doc.get(key, default)
    if not isinstance(unit, str) or unit not in table:
        raise DecodeError("unit_mismatch", f"Tasmota {key} {unit!r} is not one of {sorted(table)}")
    return table[unit]


def decode(msg: Message) -> list[Reading]:
    topic = msg.native_topic
    levels = topic.split("/")
    if len(levels) < 2 or levels[-1] != "SENSOR" or "tele" not in levels[:-1]:
        raise DecodeError("not_a_reading", f"Tasmota topic {topic!r} is not a tele/<topic>/SENSOR topic")
    levels.remove("tele")
    device = "/".join(levels[:-1])
    if not device:
        raise DecodeError("missing_device", f"Tasmota topic {topic!r} names no device")
    doc = load_json(msg.payload, dict, "Tasmota SENSOR payload")

    if "Epoch" in doc:
        t = parse_time(doc["Epoch"])
    elif "Time" in doc:
        t = parse_time(doc["Time"], msg.tz)
    else:
        t = msg.received_at
    to_celsius = _unit(doc, "TempUnit", _TEMP_UNITS, "C")
    to_hpa = _unit(doc, "PressureUnit", _PRESSURE_UNITS, "hPa")

    readings = []
    for sensor in doc.values():
        if not isinstance(sensor, dict):
            continue  # Time, TempUnit, Switch1, ... are not sensor objects
        for key, raw in sensor.items():
            if key in IGNORED or isinstance(raw, dict):
                continue
            quantity = FIELDS.get(key) or key
            channels = list(enumerate(raw, 1)) if isinstance(raw, list) else [(0, raw)]
            for channel, value in channels:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    if key.startswith("Temperature"):  # Temperature, Temperature1, ...
                        value = to_celsius(value)
                    elif key in _PRESSURE_FIELDS:
                        value = to_hpa(value)
                sensor_id = f"{device}/{channel}" if channel else device
                readings.append(Reading(t, sensor_id, quantity, value, msg.gateway_id, NAME))
    return readings
